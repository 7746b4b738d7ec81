# Seed example 04: 并行执行 (../shared/seed/tasks.md), verbatim.
import ray
import time

ray.init()

@ray.remote
def process(x):
    time.sleep(1)
    return x * 2

refs = [process.remote(i) for i in range(10)]

results = ray.get(refs)
print(results)

ray.shutdown()
