# Seed example 05: 延迟获取 (../shared/seed/tasks.md), verbatim.
import ray

ray.init()

@ray.remote
def task_a():
    return "A"

@ray.remote
def task_b(a_result):
    return f"B depends on {a_result}"

a_ref = task_a.remote()
b_ref = task_b.remote(a_ref)

print(ray.get(b_ref))

ray.shutdown()
