package image

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// The root file system is made by mmdebstrap in one pass: apt resolves the
// packages (virtual ones too), downloads them pipelined, and dpkg installs
// them in the tree. What a box never reads is never unpacked.

// imageDpkgExcludes are the dpkg path filters the image keeps (in
// imageDpkgCfg, so packages a box installs later skip them too): no manual
// pages, documentation or translations, only the copyright files. They are
// written by a hook, not given as mmdebstrap's --dpkgopt, which would pipe
// every essential package through a Python filter (minutes on a loaded
// host); what the essential stage unpacks unfiltered is trimmed after.
var imageDpkgExcludes = []string{
	"path-exclude=/usr/share/man/*",
	"path-exclude=/usr/share/info/*",
	"path-exclude=/usr/share/doc/*",
	"path-include=/usr/share/doc/*/copyright",
	"path-exclude=/usr/share/locale/*",
	"path-include=/usr/share/locale/locale.alias",
	"path-exclude=/usr/share/lintian/*",
}

// buildDpkgCfg is dpkg's configuration for the build only (removed once
// the tree is made): no fsync per unpacked file, the image is synced once
// when complete. imageDpkgCfg holds imageDpkgExcludes.
const (
	buildDpkgCfg = "etc/dpkg/dpkg.cfg.d/zz-boxlite-build"
	imageDpkgCfg = "etc/dpkg/dpkg.cfg.d/90-boxlite-image"
)

// The hooks get the package cache's path and the image's dpkg filters
// from the environment, never in a shell word.
const (
	debCacheEnv = "BOXLITE_DEB_CACHE"
	excludesEnv = "BOXLITE_DPKG_EXCLUDES"
)

// mmdebstrapArgs is the command line making rootfs: suite with minbase
// (Priority: required and apt) and packages from mirror, the packages in
// cache reused (the hooks run with cache in debCacheEnv).
func mmdebstrapArgs(suite, mirror, rootfs string, packages []string) []string {
	args := []string{"--mode=root", "--format=directory", "--variant=minbase", "--verbose",
		"--include=" + strings.Join(packages, ","),
		"--aptopt=Acquire::Languages \"none\"",
		"--aptopt=Acquire::Retries \"3\"",
	}
	args = append(args,
		// The dpkg configuration goes in before anything is unpacked, the
		// cache before anything is downloaded (hard links when it is on the
		// same file system); the cache stays after each stage, so what this
		// build fetched can be taken out once it is done.
		`--setup-hook=mkdir -p "$1/var/cache/apt/archives" "$1/etc/dpkg/dpkg.cfg.d" && echo force-unsafe-io > "$1/`+buildDpkgCfg+`" && `+
			`printf '%s\n' "$`+excludesEnv+`" > "$1/`+imageDpkgCfg+`" && `+
			`{ cp -al "$`+debCacheEnv+`/." "$1/var/cache/apt/archives/" 2>/dev/null || cp -a "$`+debCacheEnv+`/." "$1/var/cache/apt/archives/"; }`,
		"--skip=essential/unlink", "--skip=cleanup/apt/cache",
		// /usr merged before the essential packages unpack, as debootstrap
		// does (usr-is-merged), rather than converted by usrmerge and perl.
		"--hook-dir=/usr/share/mmdebstrap/hooks/maybe-merged-usr",
	)
	if strings.HasPrefix(mirror, "file:") {
		// apt runs in the tree for the second stage: the archive must be there too.
		args = append(args, "--hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount")
	}
	return append(args, suite, rootfs, mirror)
}

// bootstrap makes the root file system at rootfs, logging to logPath. The
// downloaded packages are kept in cache for the next build (only those of
// this build), not in the image.
func bootstrap(ctx context.Context, cfg BuildConfig, rootfs, logPath string) error {
	os.RemoveAll(filepath.Join(cfg.Home, "cache", "debootstrap")) // older versions' cache
	cache := filepath.Join(cfg.Home, "cache", "debs")
	if err := os.MkdirAll(cache, 0o700); err != nil {
		return noSpace(err, cache)
	}
	// Its own mount namespace: the /proc, /sys and /dev mmdebstrap mounts in
	// the tree go away with it, whatever happens.
	args := append([]string{"--mount", "--propagation", "private", "mmdebstrap"}, mmdebstrapArgs(cfg.Suite, cfg.Mirror, rootfs, cfg.Packages)...)
	env := []string{debCacheEnv + "=" + cache, excludesEnv + "=" + strings.Join(imageDpkgExcludes, "\n")}
	if err := runLoggedEnv(ctx, logPath, env, "unshare", args...); err != nil {
		return bootstrapError(err, logPath, cfg.Mirror)
	}
	if err := os.Remove(filepath.Join(rootfs, buildDpkgCfg)); err != nil {
		return fmt.Errorf("the build's dpkg configuration: %w", err)
	}
	if err := trimDocs(rootfs); err != nil {
		return err
	}
	return keepDebs(filepath.Join(rootfs, "var/cache/apt/archives"), cache)
}

// trimDocs removes what imageDpkgExcludes keep out of the image and the
// essential stage unpacked anyway.
func trimDocs(rootfs string) error {
	for _, g := range []string{"usr/share/man/*", "usr/share/info/*", "usr/share/lintian/*", "usr/share/locale/*"} {
		ms, _ := filepath.Glob(filepath.Join(rootfs, g))
		for _, p := range ms {
			if filepath.Base(p) != "locale.alias" {
				if err := os.RemoveAll(p); err != nil {
					return err
				}
			}
		}
	}
	docs, _ := filepath.Glob(filepath.Join(rootfs, "usr/share/doc/*"))
	for _, d := range docs {
		if fi, err := os.Lstat(d); err != nil || !fi.IsDir() {
			continue // a symlink to another package's directory, or a file
		}
		ents, err := os.ReadDir(d)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if e.Name() != "copyright" {
				if err := os.RemoveAll(filepath.Join(d, e.Name())); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// keepDebs moves the packages of a build from archives into cache, which
// then holds exactly them (older versions are dropped).
func keepDebs(archives, cache string) error {
	debs, _ := filepath.Glob(filepath.Join(archives, "*.deb"))
	keep := map[string]bool{}
	for _, d := range debs {
		name := filepath.Base(d)
		keep[name] = true
		dst := filepath.Join(cache, name)
		if _, err := os.Stat(dst); err == nil {
			continue // linked in from the cache; the trim removes it
		}
		if err := os.Rename(d, dst); err != nil {
			if _, err := copyFile(d, dst, 0o644); err != nil {
				os.Remove(dst)
				return noSpace(err, cache)
			}
		}
	}
	old, _ := filepath.Glob(filepath.Join(cache, "*.deb"))
	for _, d := range old {
		if !keep[filepath.Base(d)] {
			os.Remove(d)
		}
	}
	return nil
}

// unknownPackageRE finds the packages apt could not find in the mirror.
var unknownPackageRE = regexp.MustCompile(`E: Unable to locate package (\S+)|E: Package '([^']+)' has no installation candidate`)

// bootstrapError says why mmdebstrap failed: the mirror, the disk, or a
// package name, with the log's tail.
func bootstrapError(err error, logPath, mirror string) error {
	tail := logTail(logPath, 15)
	if ms := unknownPackageRE.FindAllStringSubmatch(tail, -1); len(ms) > 0 {
		var names []string
		for _, m := range ms {
			names = append(names, m[1]+m[2])
		}
		return fmt.Errorf("the Debian mirror %s has no package %s; check the names given with --packages:\n%s", mirror, strings.Join(names, ", "), tail)
	}
	switch {
	case strings.Contains(tail, "No space left on device"):
		return fmt.Errorf("the disk filled up while the image's packages were installed:\n%s\n%w", tail, ErrNoSpace)
	case strings.Contains(tail, "Failed to fetch"), strings.Contains(tail, "Temporary failure resolving"),
		strings.Contains(tail, "Could not resolve"), strings.Contains(tail, "Could not connect"),
		strings.Contains(tail, "Connection refused"), strings.Contains(tail, "Unable to connect"),
		strings.Contains(tail, "does not have a Release file"), strings.Contains(tail, "apt-get update failed"):
		return fmt.Errorf("cannot download from the Debian mirror %s; check the network or pass --mirror:\n%s\n%w", mirror, tail, ErrMirror)
	}
	return fmt.Errorf("mmdebstrap failed (%v):\n%s", err, tail)
}
