package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The service runs as real processes, so that a test can kill, pause and
// stop them as an orchestrator or a crash would. TestMain builds the binary
// once, in the background, while the first test starts the broker.
var service struct {
	done   chan struct{} // closed when the build has finished
	cancel context.CancelFunc
	path   string
	err    error
	took   time.Duration
	logged sync.Once
}

// buildService starts building ./cmd/quarantine-watch into dir. The module
// root comes from `go env GOMOD`, so the build works from any directory.
func buildService(dir string) {
	service.done = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	service.cancel = cancel
	go func() {
		defer close(service.done)
		began := time.Now()
		service.path, service.err = goBuild(ctx, dir)
		service.took = time.Since(began)
	}()
}

// endBuild stops a build no test waited for and waits until it has ended.
func endBuild() {
	service.cancel()
	<-service.done
}

func goBuild(ctx context.Context, dir string) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("building quarantine-watch: no go command on PATH: %w", err)
	}
	out, err := exec.CommandContext(ctx, goTool, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("building quarantine-watch: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("building quarantine-watch: not inside the module (go env GOMOD is empty)")
	}
	bin := filepath.Join(dir, "quarantine-watch")
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin, "./cmd/quarantine-watch")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building quarantine-watch: go build: %w\n%s", err, out)
	}
	return bin, nil
}

// serviceBinary returns the path of the built binary, waiting for the
// build; it fails t when the build failed.
func serviceBinary(t *testing.T) string {
	t.Helper()
	select {
	case <-service.done:
	case <-time.After(10 * time.Minute):
		t.Fatal("building quarantine-watch took over 10 minutes")
	}
	if service.err != nil {
		t.Fatal(service.err)
	}
	service.logged.Do(func() { t.Logf("built %s in %v", service.path, service.took.Round(time.Millisecond)) })
	return service.path
}

// serviceArgs are the flags every instance of a test shares; instance adds
// --transactional-id. They are the service's defaults (the Elastic rule, no
// --validate, the default batch size, session and transaction timeouts), so
// that what the tests prove holds for what a user runs, but for what the
// tests must set: where the broker and topics are, no metrics listener
// (instances share the host's ports) and JSON logs (the tests read them).
// A test that kills or freezes an instance adds fastFailover, so that the
// dead process's partitions move in seconds rather than the default 45 s.
func serviceArgs(b cluster, source, alerts, group string, extra ...string) []string {
	args := []string{"run",
		"--brokers", strings.Join(b.Brokers(), ","),
		"--source-topics", source,
		"--alerts-topic", alerts,
		"--group", group,
		"--metrics-addr", "",
		"--log-format", "json",
	}
	return append(args, extra...)
}

// fastFailover is the one flag the tests that kill or freeze instances add
// to serviceArgs: a session timeout of 6 s (45 s by default), so that the
// group moves a dead member's partitions within the test's time.
var fastFailover = []string{"--session-timeout", "6s"}

// Limits of the supervisor.
const (
	// maxUnplannedExits bounds restarts of one instance: a service that
	// keeps crashing is a failure, not something to retry forever.
	maxUnplannedExits = 30
	// maxBackoff caps the wait before restarting an instance that exited
	// on its own; the wait doubles from 250 ms with each exit in a row and
	// starts again once a process has run for healthyRun.
	maxBackoff = 4 * time.Second
	healthyRun = 30 * time.Second
	// stopTimeout bounds a graceful stop: --shutdown-timeout (20 s by
	// default) plus leaving the group.
	stopTimeout = 45 * time.Second
)

// instance is one quarantine-watch process under a small supervisor, as an
// orchestrator would run it: the process is restarted, with the same
// transactional id, whenever it exits and the test has not stopped it.
// Exits the test caused (kill, stop) are planned; any other exit is counted
// as unplanned, logged with the process's last words, and restarted after
// a short backoff. Each process runs in its own process group; its stderr
// (JSON logs) is appended to one file per instance, whose tail is printed
// if the test fails.
type instance struct {
	t       *testing.T
	name    string
	txnID   string
	bin     string
	args    []string
	env     []string
	logPath string
	log     *os.File

	mu        sync.Mutex
	cmd       *exec.Cmd
	exited    chan struct{} // closed when cmd has exited
	starts    int
	planned   bool // the running process's exit will be the test's doing
	wantUp    bool
	unplanned []exit // exits the test did not cause
	exitErr   error  // how the last process exited
	failure   error  // why the supervisor gave up, if it did
	done      chan struct{}
	started   chan struct{} // signalled on every start
	stopping  chan struct{} // closed by stop: no more restarts
}

// startInstance starts a supervised instance; name must be unique in the
// test and txnID stable across the instance's restarts.
func startInstance(t *testing.T, name, txnID string, args []string) *instance {
	t.Helper()
	return startInstanceEnv(t, name, txnID, args, nil)
}

// startInstanceEnv is startInstance with env (KEY=value) added to the
// environment of every process of the instance.
func startInstanceEnv(t *testing.T, name, txnID string, args, env []string) *instance {
	t.Helper()
	in := &instance{
		t:        t,
		name:     name,
		txnID:    txnID,
		bin:      serviceBinary(t),
		env:      env,
		args:     append(append([]string(nil), args...), "--transactional-id", txnID),
		logPath:  filepath.Join(t.TempDir(), "instance-"+name+".log"),
		wantUp:   true,
		done:     make(chan struct{}),
		started:  make(chan struct{}, 1),
		stopping: make(chan struct{}),
	}
	f, err := os.OpenFile(in.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	in.log = f
	if err := in.spawn(); err != nil {
		f.Close()
		t.Fatalf("instance %s: %v", name, err)
	}
	t.Cleanup(in.cleanup)
	go in.supervise()
	return in
}

// errStopped is spawn's answer once the test has stopped the instance.
var errStopped = errors.New("stopped")

func (in *instance) spawn() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.wantUp {
		return errStopped
	}
	fmt.Fprintf(in.log, "=== start %d of instance %s (transactional id %s) at %s\n", in.starts+1, in.name, in.txnID, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(in.bin, in.args...)
	cmd.Env = append(childEnv(), in.env...)
	cmd.Stdout = in.log
	cmd.Stderr = in.log
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", in.bin, err)
	}
	in.cmd = cmd
	in.exited = make(chan struct{})
	in.starts++
	in.planned = false
	select {
	case in.started <- struct{}{}:
	default:
	}
	return nil
}

// childEnv is the test's environment without QW_ variables: every setting
// of an instance is on its command line.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "QW_") {
			env = append(env, kv)
		}
	}
	return env
}

func (in *instance) supervise() {
	defer close(in.done)
	backoff := 250 * time.Millisecond
	for {
		in.mu.Lock()
		cmd, exited := in.cmd, in.exited
		in.mu.Unlock()
		began := time.Now()
		err := cmd.Wait()
		in.mu.Lock()
		in.exitErr = err
		planned, up := in.planned, in.wantUp
		if !planned {
			tail := tailFile(in.logPath, 3)
			e := exit{at: time.Now(), cause: err.Error()}
			for l := range strings.SplitSeq(tail, "\n") {
				if l = strings.TrimSpace(l); strings.HasPrefix(l, "quarantine-watch:") {
					e.cause = l // what main printed before exiting
				}
			}
			e.line = fmt.Sprintf("instance %s (pid %d, start %d) exited on its own at %s after %v: %v; last log lines:\n%s",
				in.name, cmd.Process.Pid, in.starts, e.at.Format("15:04:05.000"), time.Since(began).Round(time.Millisecond), err, tail)
			in.unplanned = append(in.unplanned, e)
			in.t.Log(e.line)
		}
		n := len(in.unplanned)
		in.mu.Unlock()
		close(exited)
		if !up {
			return
		}
		if n > maxUnplannedExits {
			in.fail(fmt.Errorf("instance %s exited on its own %d times; not restarting it", in.name, n))
			return
		}
		if !planned {
			// Like an orchestrator's crash-loop back-off: a process that
			// exits at once (the broker is down) is not restarted in a
			// busy loop.
			if time.Since(began) >= healthyRun {
				backoff = 250 * time.Millisecond
			}
			select {
			case <-time.After(backoff):
			case <-in.stopping:
				return
			}
			backoff = min(2*backoff, maxBackoff)
		}
		if err := in.spawn(); err != nil {
			if !errors.Is(err, errStopped) {
				in.fail(err)
			}
			return
		}
	}
}

func (in *instance) fail(err error) {
	in.mu.Lock()
	in.failure = err
	in.mu.Unlock()
	in.t.Error(err)
}

// current returns the running process and the channel closed when it exits.
func (in *instance) current() (*exec.Cmd, chan struct{}) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.cmd, in.exited
}

// kill sends SIGKILL to the instance's process group and waits until the
// supervisor has started a new process with the same transactional id. An
// instance that is between processes (it exited on its own and waits to be
// restarted) is killed once its next process runs. It returns the pid it
// killed.
func (in *instance) kill(t *testing.T) int {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		in.mu.Lock()
		cmd, exited, starts, failure := in.cmd, in.exited, in.starts, in.failure
		in.mu.Unlock()
		if failure != nil {
			t.Fatalf("instance %s: %v", in.name, failure)
		}
		select {
		case <-exited:
			in.waitStart(t, starts, deadline)
			continue
		default:
		}
		in.mu.Lock()
		if in.cmd != cmd {
			in.mu.Unlock()
			continue
		}
		in.planned = true
		in.mu.Unlock()
		if err := signalGroup(cmd.Process.Pid, sigKill); err != nil {
			// It has just exited; that exit was not ours after all.
			continue
		}
		in.waitExit(t, exited, 30*time.Second)
		in.waitStart(t, starts, deadline)
		return cmd.Process.Pid
	}
	t.Fatalf("instance %s: no running process to kill within a minute", in.name)
	return 0
}

// waitStart waits until the instance has started more than starts processes.
func (in *instance) waitStart(t *testing.T, starts int, deadline time.Time) {
	t.Helper()
	for {
		in.mu.Lock()
		restarted, failure := in.starts > starts, in.failure
		in.mu.Unlock()
		if restarted {
			return
		}
		if failure != nil || time.Now().After(deadline) {
			t.Fatalf("instance %s was not restarted (%v)", in.name, failure)
		}
		select {
		case <-in.started:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (in *instance) waitExit(t *testing.T, exited chan struct{}, timeout time.Duration) {
	t.Helper()
	select {
	case <-exited:
	case <-time.After(timeout):
		t.Fatalf("instance %s did not exit within %v", in.name, timeout)
	}
}

// stop stops the instance gracefully with SIGTERM, for good, and returns
// how the process it stopped exited: nil for status 0, and nil when no
// process was running. It may be called from any goroutine.
func (in *instance) stop() error {
	in.mu.Lock()
	already := !in.wantUp
	in.wantUp = false
	in.planned = true
	cmd, exited := in.cmd, in.exited
	in.mu.Unlock()
	if !already {
		close(in.stopping)
	}
	select {
	case <-exited:
		// No process runs (it exited on its own and waits to be
		// restarted, which it no longer will be): nothing to stop.
		<-in.done
		return nil
	default:
		// An error means the process has exited since it was looked up,
		// which is what was wanted.
		_ = signalGroup(cmd.Process.Pid, sigTerm)
		select {
		case <-exited:
		case <-time.After(stopTimeout):
			_ = signalGroup(cmd.Process.Pid, sigKill)
			<-exited
			return fmt.Errorf("did not stop within %v of SIGTERM; killed it", stopTimeout)
		}
		<-in.done
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.exitErr
}

// pause and resume send SIGSTOP and SIGCONT to the running process.
func (in *instance) pause(t *testing.T) {
	t.Helper()
	cmd, _ := in.current()
	if err := signalGroup(cmd.Process.Pid, sigStop); err != nil {
		t.Fatalf("instance %s: SIGSTOP: %v", in.name, err)
	}
}

func (in *instance) resume(t *testing.T) {
	t.Helper()
	cmd, _ := in.current()
	if err := signalGroup(cmd.Process.Pid, sigCont); err != nil {
		t.Fatalf("instance %s: SIGCONT: %v", in.name, err)
	}
}

// exit is an exit of an instance's process that the test did not cause.
type exit struct {
	at    time.Time
	cause string // the error the process printed last, or its exit status
	line  string // who, when, how, and the last log lines
}

// unplannedExits returns the exits the test did not cause.
func (in *instance) unplannedExits() []exit {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]exit(nil), in.unplanned...)
}

// cleanup kills what still runs and, if the test failed, prints the tail
// of the instance's log.
func (in *instance) cleanup() {
	in.mu.Lock()
	in.wantUp = false
	in.planned = true
	cmd := in.cmd
	in.mu.Unlock()
	select {
	case <-in.done:
	default:
		select {
		case <-in.stopping:
		default:
			close(in.stopping)
		}
		_ = signalGroup(cmd.Process.Pid, sigCont)
		_ = signalGroup(cmd.Process.Pid, sigKill)
		select {
		case <-in.done:
		case <-time.After(time.Minute):
			in.t.Errorf("instance %s: did not exit after SIGKILL", in.name)
		}
	}
	in.log.Close()
	if in.t.Failed() {
		in.t.Logf("last lines of instance %s's log (%s):\n%s", in.name, in.logPath, tailFile(in.logPath, 25))
	}
}

// crashLines bounds what tailFile keeps of a Go crash's output.
const crashLines = 80

// tailFile returns the last n lines of a file, each cut to 600 bytes,
// leaving out dead-letter warnings: bad input is expected, and a crash or
// a Kafka error is what the lines are for. Where the file holds a Go
// crash, it returns the crash's first crashLines lines instead.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	// The tail of a log is in its last few hundred KiB.
	if st, err := f.Stat(); err == nil && st.Size() > 512<<10 {
		_, _ = f.Seek(st.Size()-512<<10, io.SeekStart)
	}
	var lines, crash []string
	skipped := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.Contains(line, []byte(`"msg":"dead letter"`)) {
			skipped++
			continue
		}
		if len(line) > 600 {
			line = append(line[:600:600], "..."...)
		}
		// A Go crash (a panic, a fatal error) prints its message and
		// then its goroutines' stacks: the message and the first stack
		// are the cause, and the last lines only the bottom of a stack.
		if crash == nil && (bytes.HasPrefix(line, []byte("panic: ")) || bytes.HasPrefix(line, []byte("fatal error: "))) {
			crash = []string{}
		}
		if crash != nil && len(crash) < crashLines {
			crash = append(crash, string(bytes.Clone(line)))
		}
		lines = append(lines, string(bytes.Clone(line)))
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	if crash != nil {
		lines = crash
	}
	tail := "  " + strings.Join(lines, "\n  ")
	if skipped > 0 {
		tail += fmt.Sprintf("\n  (%d dead-letter warnings left out)", skipped)
	}
	return tail
}

// TestTailFileKeepsACrash: an instance's unplanned exit is reported with
// the cause of a Go crash, not with the bottom of its stack.
func TestTailFileKeepsACrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "instance.log")
	log := `{"level":"INFO","msg":"consuming"}
{"level":"WARN","msg":"dead letter","err":"matcher: malformed JSON"}
panic: runtime error: index out of range [3] with length 3

goroutine 1 [running]:
github.com/quarantine-watch/quarantine-watch/consumer.(*loop).run(...)
	/src/consumer/loop.go:10 +0x1
main.main()
	/src/cmd/quarantine-watch/main.go:37 +0x6c
`
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	got := tailFile(path, 3)
	if !strings.HasPrefix(strings.TrimSpace(got), "panic: runtime error: index out of range") || !strings.Contains(got, "(*loop).run") {
		t.Errorf("tailFile left out the crash's cause:\n%s", got)
	}
	if err := os.WriteFile(path, []byte("{\"msg\":\"a\"}\n{\"msg\":\"b\"}\n{\"msg\":\"c\"}\n{\"msg\":\"d\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := tailFile(path, 2); strings.Contains(got, `"a"`) || strings.Contains(got, `"b"`) || !strings.Contains(got, `"d"`) {
		t.Errorf("tailFile(2) of four lines without a crash:\n%s", got)
	}
}
