package qemu

import (
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"testing"
)

func TestTSCkHz(t *testing.T) {
	const (
		constant = "processor\t: 0\ncpu MHz\t\t: 1200.000\nflags\t\t: fpu tsc constant_tsc nonstop_tsc\n"
		variable = "processor\t: 0\ncpu MHz\t\t: 1200.000\nflags\t\t: fpu tsc\n"
	)
	measured := func(khz int, ok bool) func() (int, bool) { return func() (int, bool) { return khz, ok } }
	for _, tt := range []struct {
		name    string
		cpuinfo string
		measure func() (int, bool)
		want    int
	}{
		// "cpu MHz" is the current clock (here throttled to 1.2 GHz): the
		// TSC's rate is what was measured.
		{"measured, not cpu MHz", constant, measured(2_095_998, true), 2_095_998},
		{"rate follows the CPU clock", variable, measured(2_095_998, true), 0},
		{"no cpuinfo", "", measured(2_095_998, true), 0},
		{"cannot measure", constant, measured(0, false), 0},
		{"implausible", constant, measured(5_000, true), 0},
	} {
		if got := tscKHz(tt.cpuinfo, tt.measure); got != tt.want {
			t.Errorf("%s: %d kHz, want %d", tt.name, got, tt.want)
		}
	}
}

// TestMeasureTSCkHz compares the measurement with the rate the host kernel
// found at boot, where its log still has it.
func TestMeasureTSCkHz(t *testing.T) {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("the TSC is measured on linux/amd64 only")
	}
	out, _ := exec.Command("dmesg").Output()
	// The refined calibration, when there is one, comes after the first guess.
	m := regexp.MustCompile(`tsc: (?:Refined TSC clocksource calibration: |Detected )(\d+)\.(\d{3}) MHz`).FindAllSubmatch(out, -1)
	if m == nil {
		t.Skip("the kernel log no longer says the TSC's rate")
	}
	last := m[len(m)-1]
	mhz, _ := strconv.Atoi(string(last[1]))
	frac, _ := strconv.Atoi(string(last[2]))
	kernel := mhz*1000 + frac
	got, ok := measureTSCkHz()
	if !ok {
		t.Fatal("no measurement")
	}
	t.Logf("measured %d kHz, kernel %d kHz", got, kernel)
	if diff := got - kernel; diff*100 > kernel || -diff*100 > kernel {
		t.Fatalf("measured %d kHz, the kernel found %d kHz (more than 1%% apart)", got, kernel)
	}
}
