# Seed example 01: 基本语法 (../shared/seed/tasks.md), verbatim.
import ray

@ray.remote
def my_task(x, y):
    return x + y

result_ref = my_task.remote(1, 2)
result = ray.get(result_ref)
print(result)
