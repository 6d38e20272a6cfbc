#!/bin/sh
# Sourced by the job scripts (not a job itself): `check_kernel_log N WHAT` prints TAP line N,
# failing (and returning 1) if the kernel log holds a BUG, WARNING, Oops, lockdep, KASAN,
# might_sleep, hung-task or RCU stall report.
check_kernel_log() {
    reports=$(dmesg | grep -E 'BUG:|WARNING:|KASAN|circular locking|possible recursive locking|inconsistent lock state|sleeping function called|Oops|blocked for more than|detected stall')
    if [ -n "$reports" ]; then
        echo "not ok $1 no kernel BUG/WARNING/lockdep/KASAN/hung-task report $2"
        echo "$reports" | sed 's/^/#   /'
        return 1
    fi
    echo "ok $1 no kernel BUG/WARNING/lockdep/KASAN/hung-task report $2"
}
