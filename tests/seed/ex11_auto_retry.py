# Seed example 11: 自动重试 (../shared/seed/tasks.md), verbatim.
import ray

ray.init()

@ray.remote(max_retries=3)
def flaky_task():
    import random
    if random.random() < 0.5:
        raise Exception("Random failure")
    return "Success"

try:
    result = ray.get(flaky_task.remote())
    print(result)
except Exception as e:
    print(f"Failed after retries: {e}")

ray.shutdown()
