//go:build unix

package integration

import "syscall"

// The signals the tests send to an instance.
const (
	sigKill = syscall.SIGKILL
	sigTerm = syscall.SIGTERM
	sigStop = syscall.SIGSTOP
	sigCont = syscall.SIGCONT
)

// procAttr puts an instance in its own process group, so that a signal to
// the group reaches the whole instance and nothing else, and a terminal's
// Ctrl-C reaches only the test, whose cleanup stops the instance.
func procAttr() *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	setDeathSignal(a)
	return a
}

// signalGroup sends sig to the process group led by pid.
func signalGroup(pid int, sig syscall.Signal) error {
	return syscall.Kill(-pid, sig)
}
