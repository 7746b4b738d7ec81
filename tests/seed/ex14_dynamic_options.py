# Seed example 14: 动态远程选项 (../shared/seed/tasks.md), verbatim.
import ray

ray.init()

@ray.remote
def base_task(x):
    return x * 2

ref1 = base_task.options(num_cpus=2).remote(10)
ref2 = base_task.options(num_gpus=1).remote(20)

print(ray.get([ref1, ref2]))

ray.shutdown()
