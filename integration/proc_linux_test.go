package integration

import "syscall"

// setDeathSignal has the kernel kill an instance when the test binary dies
// without running its cleanups (a go test -timeout panic), so that no
// instance outlives the test.
func setDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
