//go:build !linux

package guestagent

import "errors"

var errNotLinux = errors.New("only on Linux")

func setClock(int64) error      { return errNotLinux }
func setHostname(string) error  { return errNotLinux }
func reseedRandom([]byte) error { return errNotLinux }
