"""SIGTERM while a study runs is handled as Ctrl-C (Tune's graceful stop, then our resume hint)."""

from __future__ import annotations

import os
import signal

import pytest

from orchestration.study.signals import sigterm_as_interrupt


@pytest.fixture
def plain_sigint():
    """Python's own Ctrl-C for the test: a Ray Train run earlier in this process leaves its SIGINT
    handler installed, which would act on the signal (and start Ray) instead of raising."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_sigterm_inside_a_study_is_a_keyboard_interrupt_and_the_handler_is_restored(plain_sigint):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler sends
    assert signal.getsignal(signal.SIGTERM) is before


def test_outside_the_main_thread_nothing_is_installed():
    import threading

    seen = []

    def worker() -> None:
        with sigterm_as_interrupt():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [signal.getsignal(signal.SIGTERM)]
