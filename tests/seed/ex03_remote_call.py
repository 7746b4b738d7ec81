# Seed example 03: 远程调用 (../shared/seed/tasks.md), verbatim.
import ray

ray.init()

@ray.remote
def compute(x):
    return x ** 2

ref = compute.remote(10)

result = ray.get(ref)
print(result)

ray.shutdown()
