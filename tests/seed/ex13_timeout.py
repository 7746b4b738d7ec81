# Seed example 13: 超时处理 (../shared/seed/tasks.md), verbatim.
import ray
import time

ray.init()

@ray.remote
def slow_task():
    time.sleep(10)
    return "done"

ref = slow_task.remote()

try:
    result = ray.get(ref, timeout=2)
except ray.exceptions.GetTimeoutError:
    print("Task timed out")

ray.shutdown()
