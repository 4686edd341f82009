package sandbox

import (
	"os"
	"strings"
)

// KVMUsable reports whether KVM can boot a stock kernel here, and why not.
// /dev/kvm opening is not enough: a PVM-only KVM (no vmx/svm, kvm_pvm
// loaded) accepts the ioctls and then hangs a stock kernel.
func KVMUsable() (bool, string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false, "/dev/kvm: " + err.Error()
	}
	f.Close()
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		return false, "the kernel's KVM is PVM-only (kvm_pvm), which cannot boot a stock kernel"
	}
	cpu, _ := os.ReadFile("/proc/cpuinfo")
	flags := ""
	for _, line := range strings.Split(string(cpu), "\n") {
		if strings.HasPrefix(line, "flags") {
			flags = " " + line + " "
			break
		}
	}
	if !strings.Contains(flags, " vmx ") && !strings.Contains(flags, " svm ") {
		return false, "the CPU advertises no vmx/svm (nested virtualization is off)"
	}
	_, intel := os.Stat("/sys/module/kvm_intel")
	_, amd := os.Stat("/sys/module/kvm_amd")
	if intel != nil && amd != nil {
		return false, "neither kvm_intel nor kvm_amd is loaded"
	}
	return true, "KVM"
}
