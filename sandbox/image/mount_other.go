//go:build !linux

package image

// Images are built on Linux only (mmdebstrap); elsewhere these do nothing.

func detachMounts(dir string) {}

func syncFS(dir string) {}
