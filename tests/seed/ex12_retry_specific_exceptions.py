# Seed example 12: 重试特定异常 (../shared/seed/tasks.md), verbatim.
import ray

ray.init()

class RetryableError(Exception):
    pass

@ray.remote(retry_exceptions=[RetryableError], max_retries=3)
def task_with_retry():
    raise RetryableError("Will retry")

ray.shutdown()
