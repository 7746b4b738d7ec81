# Seed example 10: 自定义资源 (../shared/seed/tasks.md), verbatim.
import ray

ray.init(resources={"custom_resource": 4})

@ray.remote(resources={"custom_resource": 1})
def custom_task():
    return "Using custom resource"

ray.get(custom_task.remote())

ray.shutdown()
