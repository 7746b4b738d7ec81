# Seed example 20: 避免过度并行 (../shared/seed/tasks.md), verbatim.
import ray

ray.init(num_cpus=4)

@ray.remote
def task(x):
    return x * 2

data = list(range(100))

refs = [task.remote(x) for x in data[:4]]
results = ray.get(refs)

refs = [task.remote(x) for x in data]
results = ray.get(refs)

ray.shutdown()
