package qemu

import (
	"slices"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rdtsc reads the time-stamp counter (tsc_linux_amd64.s).
func rdtsc() uint64

// measureTSCkHz measures the TSC's rate against the monotonic clock (see
// hostTSCkHz). It refuses where RDTSC is disabled for this process
// (prctl PR_SET_TSC), which would fault.
func measureTSCkHz() (int, bool) {
	var mode int32
	if err := unix.Prctl(unix.PR_GET_TSC, uintptr(unsafe.Pointer(&mode)), 0, 0, 0); err != nil || mode != unix.PR_TSC_ENABLE {
		return 0, false
	}
	// read returns a TSC value and the clock reading taken with it: the
	// midpoint of the tightest of five clock brackets around an RDTSC.
	read := func() (time.Time, uint64) {
		var at time.Time
		var tsc uint64
		width := time.Duration(1<<63 - 1)
		for range 5 {
			t0 := time.Now()
			c := rdtsc()
			t1 := time.Now()
			if w := t1.Sub(t0); w < width {
				width, at, tsc = w, t0.Add(w/2), c
			}
		}
		return at, tsc
	}
	var runs []int
	for range 3 {
		t0, c0 := read()
		time.Sleep(50 * time.Millisecond)
		t1, c1 := read()
		if ns := t1.Sub(t0).Nanoseconds(); ns > 0 && c1 > c0 {
			runs = append(runs, int((c1-c0)*1_000_000/uint64(ns))) // ticks per ms = kHz
		}
	}
	if len(runs) == 0 {
		return 0, false
	}
	slices.Sort(runs)
	return runs[len(runs)/2], true
}
