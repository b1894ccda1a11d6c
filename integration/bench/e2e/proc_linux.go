package main

import "syscall"

// setDeathSignal has the kernel kill a contender when the benchmark dies
// without stopping it (a panic, SIGKILL), so that none outlives it.
func setDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
