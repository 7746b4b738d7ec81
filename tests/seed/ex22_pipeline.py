# Seed example 22: 流水线模式 (../shared/seed/tasks.md), verbatim.
import ray

ray.init()

@ray.remote
def stage1(x):
    return x + 1

@ray.remote
def stage2(x):
    return x * 2

@ray.remote
def stage3(x):
    return x ** 2

def pipeline(x):
    r1 = stage1.remote(x)
    r2 = stage2.remote(r1)
    r3 = stage3.remote(r2)
    return ray.get(r3)

print([pipeline(i) for i in range(5)])

ray.shutdown()
