//go:build unix && !linux

package integration

import "syscall"

// setDeathSignal does nothing where the kernel has no parent-death signal:
// an instance left by a test binary that died is stopped by hand.
func setDeathSignal(*syscall.SysProcAttr) {}
