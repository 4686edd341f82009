package qemu

import (
	"os"
	"slices"
	"strings"
	"sync"
)

// hostTSCkHz is the rate of the host's time-stamp counter in kHz, 0 when
// unknown; measured once per process.
//
// Under TCG a guest's RDTSC reads the host's TSC (QEMU's
// cpu_get_host_ticks), so the rate the guest kernel must be told with
// tsc_early_khz= is the host TSC's rate. What reports it:
//   - The kernel's own tsc_khz is not exported by mainline Linux: sysfs has
//     no tsc_khz (tsc_freq_khz exists only with out-of-tree patches), and
//     /proc/cpuinfo's "cpu MHz" is the CPU's current clock wherever APERF/
//     MPERF or cpufreq exist, which moves with frequency scaling and turbo
//     (this was the old source: a wrong rate makes guest time run fast or
//     slow, and tsc=reliable keeps the kernel from noticing).
//   - perf's mmap page carries the TSC-to-ns factors only while sched_clock
//     is stable, which it is not on VM hosts that mark the TSC unstable
//     (the CI hosts do).
//   - dmesg's "tsc: Refined TSC clocksource calibration" line needs root
//     and rotates out of the ring buffer.
//
// So it is measured: TSC ticks over 50 ms of the monotonic clock, each end
// read between two clock reads (keeping the tightest bracket of five), the
// median of three runs; accurate to well under 0.1%. Only where the CPU
// says constant_tsc (the rate does not follow the CPU clock): otherwise no
// single rate is right and the guest calibrates itself.
var hostTSCkHz = sync.OnceValue(func() int {
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	return tscKHz(string(cpuinfo), measureTSCkHz)
})

// tscKHz is hostTSCkHz given /proc/cpuinfo's text and a measurement.
func tscKHz(cpuinfo string, measure func() (int, bool)) int {
	if !cpuFlag(cpuinfo, "constant_tsc") {
		return 0
	}
	khz, ok := measure()
	if !ok || khz < 100_000 || khz > 10_000_000 { // 100 MHz-10 GHz, else implausible
		return 0
	}
	return khz
}

// cpuFlag reports whether the first "flags" line of cpuinfo has flag.
func cpuFlag(cpuinfo, flag string) bool {
	for _, line := range strings.Split(cpuinfo, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			return slices.Contains(strings.Fields(v), flag)
		}
	}
	return false
}
