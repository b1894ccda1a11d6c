//go:build !linux

package main

import "syscall"

// setDeathSignal does nothing: only Linux has a parent-death signal, and the
// benchmark's measurements need Linux's /proc anyway.
func setDeathSignal(*syscall.SysProcAttr) {}
