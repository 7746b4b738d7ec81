# Seed example 26: 检查任务状态 (../shared/seed/tasks.md), verbatim.
import ray
import time

ray.init()

@ray.remote
def long_task():
    time.sleep(10)
    return "done"

ref = long_task.remote()

print(ray.wait([ref], timeout=0)[0] == [])

time.sleep(11)
print(ray.wait([ref], timeout=0)[0] != [])

ray.shutdown()
