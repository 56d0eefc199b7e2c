"""What every test process needs before any test runs."""

import signal

# A test command started in the background by a non-interactive shell (`./dev test &`, a CI
# runner's job) inherits SIGINT ignored, and so would every process a test starts and then
# interrupts to check its Ctrl-C (events --follow, op wait, a lab torn down on SIGINT): give
# SIGINT its handler back, so children start with it at its default.
signal.signal(signal.SIGINT, signal.default_int_handler)
