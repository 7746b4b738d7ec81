# Seed example 25: 错误处理 (../shared/seed/tasks.md), verbatim.
import ray

ray.init()

@ray.remote
def failing_task():
    raise ValueError("Intentional error")

ref = failing_task.remote()

try:
    ray.get(ref)
except ray.exceptions.RayTaskError as e:
    print(f"Task failed: {e}")

ray.shutdown()
