"""The task runner shared by ensemble members and toys: order, failures named, progress resumed part-way."""

import pytest

from lumin_inferno.exceptions import FanOutError
from lumin_inferno.fanout.tasks import progress_advance, run_tasks


class Square:
    def __init__(self, x):
        self.x = x

    def __call__(self):
        if self.x < 0:
            raise ValueError(f"negative input {self.x}")
        return self.x * self.x


def test_run_tasks_here_in_order_with_callbacks():
    seen = []
    out = run_tasks([Square(i) for i in range(4)], progress=True, done=2, on_result=lambda t, r: seen.append(t.x))
    assert out == [0, 1, 4, 9] and seen == [0, 1, 2, 3]


def test_failing_task_is_named_and_the_others_still_run():
    with pytest.raises(FanOutError, match="task -3 failed: ValueError: negative input -3"):
        run_tasks([Square(1), Square(-3)], progress=False, describe=lambda t: f"task {t.x}")
    done = []
    with pytest.raises(FanOutError, match="2 of 4 task\\(s\\) failed.*task -1.*task -2"):
        run_tasks([Square(-1), Square(2), Square(-2), Square(3)], progress=False, describe=lambda t: f"task {t.x}",
                  on_result=lambda t, r: done.append(r))
    assert done == [4, 9]  # finished work is kept


@pytest.mark.parametrize("done", [0, 1, 3])
def test_progress_resumes_part_way(done):
    advance = progress_advance(True, 3, done)  # a rerun that finds `done` of 3 units finished
    for _ in range(3 - done):
        advance(1)


class NeedsPackage:
    """What a worker without lumin_inferno meets when it unpickles a task: ModuleNotFoundError."""

    def __call__(self):
        raise ModuleNotFoundError("No module named 'lumin_inferno'")


def test_worker_without_the_package_is_named_with_a_hint():
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        with pytest.raises(FanOutError) as err:
            run_tasks([Square(2), NeedsPackage()], client=client, retries=0, progress=False,
                      describe=lambda t: "member 7" if isinstance(t, NeedsPackage) else "square")
    message = str(err.value)
    assert "is lumin_inferno installed on the workers?" in message and "member 7: ModuleNotFoundError" in message
