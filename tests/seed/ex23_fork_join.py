# Seed example 23: Fork-Join 模式 (../shared/seed/tasks.md), verbatim.
import ray

ray.init()

@ray.remote
def compute(x):
    return x ** 2

@ray.remote
def aggregate(results):
    return sum(results)

data = list(range(10))

fork_refs = [compute.remote(x) for x in data]
join_ref = aggregate.remote(fork_refs)

print(ray.get(join_ref))

ray.shutdown()
