# Seed example 09: GPU 资源 (../shared/seed/tasks.md), verbatim.
import ray

ray.init(num_gpus=2)

@ray.remote(num_gpus=1)
def gpu_task():
    import torch
    return torch.cuda.is_available()

@ray.remote(num_gpus=0.5)
def half_gpu_task():
    import torch
    return "Using half GPU"

ray.get(gpu_task.remote())
ray.get(half_gpu_task.remote())

ray.shutdown()
