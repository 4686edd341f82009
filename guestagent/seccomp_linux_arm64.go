package guestagent

import "golang.org/x/sys/unix"

// nativeArch is the only ABI the jail filter lets in on arm64: 32-bit ARM
// (AUDIT_ARCH_ARM, the compat ABI of kernels that have it) is refused by the
// architecture check.
const nativeArch = unix.AUDIT_ARCH_AARCH64

// allowArch: AArch64 has only the calls of allowCommon.
var allowArch []uintptr

// refuseArch: nothing AArch64-specific is refused beyond refuseCommon.
var refuseArch []uintptr
