package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux architecture Go supports (sysconf(_SC_CLK_TCK) would
// need cgo to ask).
const clockTicks = 100

// child is a contender running as its own process, so that its CPU time
// and peak RSS are its own.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	log     *os.File
	exited  chan struct{} // closed when the process has exited
	waitErr error         // set before exited is closed
	started time.Time
}

// startChild starts argv with its stdout and stderr in logDir/name.log.
func startChild(name, logDir string, argv []string, env []string) (*child, error) {
	path := filepath.Join(logDir, name+".log")
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	setDeathSignal(cmd.SysProcAttr)
	c := &child{name: name, cmd: cmd, logPath: path, log: f, exited: make(chan struct{})}
	c.started = time.Now()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		c.waitErr = cmd.Wait()
		f.Close()
		close(c.exited)
	}()
	return c, nil
}

// running reports whether the process has not exited yet.
func (c *child) running() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// procStats is what the kernel says a process has used so far.
type procStats struct {
	CPU time.Duration // utime + stime, every thread
	HWM int64         // VmHWM, peak resident set, bytes
}

// stats reads /proc/<pid>/stat and /proc/<pid>/status of the running child.
func (c *child) stats() (procStats, error) {
	if !c.running() {
		return procStats{}, fmt.Errorf("%s has exited: %v", c.name, c.waitErr)
	}
	return readProcStats(c.cmd.Process.Pid)
}

func readProcStats(pid int) (procStats, error) {
	var s procStats
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name, field 2, is in parentheses and may hold spaces:
	// fields are counted from the last ')'. utime and stime are fields 14
	// and 15, so 11 and 12 after it.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return s, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	s.CPU = time.Duration(ut+st) * time.Second / clockTicks
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return s, fmt.Errorf("/proc/%d/status: VmHWM: %w", pid, err)
			}
			s.HWM = kb << 10
		}
	}
	return s, nil
}

// stop sends SIGTERM and waits for the process to exit, killing it after
// timeout. An exit status other than 0 (or death by our SIGKILL) is an error.
func (c *child) stop(timeout time.Duration) error {
	if !c.running() {
		return c.exitErr()
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		// A JVM ends with status 128+15 once its shutdown hooks have run.
		var ee *exec.ExitError
		if errors.As(c.waitErr, &ee) && ee.ExitCode() == 128+int(syscall.SIGTERM) {
			return nil
		}
		return c.exitErr()
	case <-time.After(timeout):
		_ = c.cmd.Process.Kill()
		<-c.exited
		return fmt.Errorf("%s did not stop within %s of SIGTERM and was killed", c.name, timeout)
	}
}

func (c *child) exitErr() error {
	if c.waitErr != nil {
		return fmt.Errorf("%s: %w; last log lines (%s):\n%s", c.name, c.waitErr, c.logPath, c.logTail(30))
	}
	return nil
}

// kill ends the process now; for clean-up after a failure.
func (c *child) kill() {
	if c.running() {
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// logTail returns the last n lines of the child's log.
func (c *child) logTail(n int) string {
	f, err := os.Open(c.logPath)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	data, _ := io.ReadAll(io.LimitReader(f, 64<<20))
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// failed returns an error saying the child exited early, with its log.
func (c *child) failed(ctx context.Context) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("%s exited before it was done (%v); last log lines (%s):\n%s", c.name, c.waitErr, c.logPath, c.logTail(30))
}
