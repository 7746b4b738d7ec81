# Seed example 17: 生成器任务 (../shared/seed/tasks.md), verbatim.
import ray

ray.init()

@ray.remote(num_returns=3)
def multi_return():
    return 1, 2, 3

ref1, ref2, ref3 = multi_return.remote()
print(ray.get([ref1, ref2, ref3]))

ray.shutdown()
