# Seed example 07: 复杂依赖 (../shared/seed/tasks.md), verbatim.
import ray

ray.init()

@ray.remote
def task_a():
    return "A"

@ray.remote
def task_b(a_result):
    return f"B({a_result})"

@ray.remote
def task_c(a_result):
    return f"C({a_result})"

@ray.remote
def task_d(b_result, c_result):
    return f"D({b_result}, {c_result})"

a_ref = task_a.remote()
b_ref = task_b.remote(a_ref)
c_ref = task_c.remote(a_ref)
d_ref = task_d.remote(b_ref, c_ref)

print(ray.get(d_ref))

ray.shutdown()
