//go:build soak

package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/quarantine-watch/quarantine-watch/internal/kafkatest"
)

// The soak (make soak; not in make test, whose files do not carry the soak
// build tag): the dense oracle on a cluster of three brokers for
// SOAK_DURATION (30 minutes by default) at a steady source rate, two
// instances on the service's default flags under the deployment's
// GOMEMLIMIT, each with a metrics listener of its own, which the test
// scrapes every 10 s. Along the way: a SIGKILL of an instance (restarted),
// a scale-out to three and back, and a bounce of a broker. At the end the
// dense oracle must hold; each long-lived process's RSS, goroutines, heap
// in use and open files must not grow beyond the limits of soakMetrics over
// its steady part; fewer than 5 % of transactions may abort outside the
// fault windows; and no process may exceed the pod's memory limit. The
// method and the reasons for each limit are in docs/reliability.md.
//
// Three brokers rather than one: a bounce of one of three is what an
// operator does in production (a rolling upgrade), and moves leaders and
// coordinators, and with them the service's connections; the single
// broker's outage is TestRecoveryInProcess's. The three small-heap JVMs
// fit on the machine beside the service and the readers.

// soakSettle is how long a fault window lasts after the group has
// recovered: aborts that follow a recovery by this little are still the
// fault's (a second rebalance, a commit refused by a coordinator that has
// just moved).
const soakSettle = 30 * time.Second

// soakTxnEvery is how often the source writer starts a transaction, of
// SOAK_RATE records. A transaction on three brokers (acks from every
// in-sync replica, markers on six partitions) took 0.7 s on the loaded
// machine: small ones every 200 ms fell behind the rate.
const soakTxnEvery = time.Second

// soak is one soak run.
type soak struct {
	*denseRun
	c        *kafkatest.Cluster
	duration time.Duration
	warm     time.Duration
	began    time.Time

	// procs and metricsAddr are the instances and their metrics
	// listeners, for the sampler (denseRun.instances is the test
	// goroutine's alone).
	procs       map[string]*instance
	metricsAddr map[string]string

	mu      sync.Mutex
	samples []soakSample
	written []soakPoint
	windows []soakWindow
}

func soakEnv(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration such as 30m", name, v)
	}
	return d
}

// TestSoak: see the top of this file.
func TestSoak(t *testing.T) {
	duration := soakEnv(t, "SOAK_DURATION", 30*time.Minute)
	rate := 250
	if v := os.Getenv("SOAK_RATE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SOAK_RATE=%q: want records a second", v)
		}
		rate = n
	}
	c := kafkatest.StartClusterForTest(t, kafkatest.ClusterOptions{})
	// records is a ceiling the writer never reaches: the run ends it.
	r := startDenseRun(t, c, c.Brokers(), denseSourceConfig{
		records: 2 * rate * int(duration.Seconds()), chunk: rate, abortEvery: 5, period: soakTxnEvery, seed: 1612})
	s := &soak{denseRun: r, c: c, duration: duration, warm: min(3*time.Minute, duration/10), procs: map[string]*instance{}, metricsAddr: map[string]string{}}
	t.Logf("soak: %v at %d records/s (transactions of %d every %v, every fifth aborted), warm-up %v, GOMEMLIMIT=%s",
		duration, rate, rate, soakTxnEvery, s.warm, podGOMEMLIMIT)

	s.start("a")
	s.start("b")
	waitConsuming(t, r.instances["a"], 2*time.Minute)
	waitConsuming(t, r.instances["b"], 2*time.Minute)
	s.began = time.Now()
	r.began = s.began
	r.src.start()
	ctx, stopSampling := context.WithCancel(context.Background())
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		s.sample(ctx)
	}()
	defer func() {
		stopSampling()
		<-sampled
	}()
	s.window(soakStartup, func() {
		s.recovered(2)
		for time.Since(s.began) < s.warm {
			time.Sleep(time.Second)
		}
	})

	s.at(0.15)
	s.window("SIGKILL b", func() {
		pid := r.instances["b"].kill(t)
		r.kills++
		r.step("SIGKILL b (pid %d); restarted with the same transactional id", pid)
		s.recovered(2)
	})

	s.at(0.25)
	s.window("scale to 3", func() {
		s.start("c")
		r.step("started c")
		s.recovered(3)
	})

	s.at(0.35)
	s.window("scale to 2", func() {
		r.stop("c")
		r.step("stopped c (SIGTERM)")
		s.recovered(2)
	})

	s.at(0.45)
	s.window("broker bounce", func() { s.bounce() })

	s.at(1)
	stopSampling()
	<-sampled
	r.step("soak over; the writer ends")
	r.src.endNow()
	res := r.finish(5 * time.Minute)
	ex := r.unplanned()
	for _, e := range ex {
		t.Errorf("unplanned exit: %s: %s", firstLine(e.line), e.cause)
	}
	s.judge(res, len(ex))
}

// start starts an instance on the default flags but for a metrics
// listener of its own (instances share the host), with the deployment's
// GOMEMLIMIT.
func (s *soak) start(name string) {
	t := s.t
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freeTCPPorts(t, 1)[0]))
	args := denseArgs(s.service, s.p)
	for i := range args {
		if args[i] == "--metrics-addr" {
			args[i+1] = addr
		}
	}
	in := startInstanceEnv(t, name, kafkatest.Name(t, "txn-"+name), args, []string{"GOMEMLIMIT=" + podGOMEMLIMIT})
	s.instances[name] = in
	s.order = append(s.order, name)
	s.running = append(s.running, name)
	s.mu.Lock()
	s.procs[name], s.metricsAddr[name] = in, addr
	s.mu.Unlock()
}

// at waits until fraction f of the soak has passed, checking meanwhile
// that no instance's supervisor has given up. A fault whose time has
// passed while the one before it recovered starts at once.
func (s *soak) at(f float64) {
	s.t.Helper()
	when := s.began.Add(time.Duration(f * float64(s.duration)))
	for time.Now().Before(when) {
		s.checkFailures()
		time.Sleep(min(time.Second, time.Until(when)))
	}
}

func (s *soak) checkFailures() {
	s.t.Helper()
	for _, n := range s.order {
		in := s.instances[n]
		in.mu.Lock()
		failure := in.failure
		in.mu.Unlock()
		if failure != nil {
			s.t.Fatalf("instance %s: %v", n, failure)
		}
	}
}

// window runs a fault and records its window: from the fault's first
// action until it has returned (once the group has recovered) and
// soakSettle more, which it waits out.
func (s *soak) window(what string, fault func()) {
	s.t.Helper()
	from := time.Since(s.began)
	if what == soakStartup {
		from = 0
	}
	fault()
	time.Sleep(soakSettle)
	to := time.Since(s.began)
	s.mu.Lock()
	s.windows = append(s.windows, soakWindow{what: what, from: from, to: to})
	s.mu.Unlock()
	s.step("window %q: %.1f to %.1f min", what, from.Minutes(), to.Minutes())
}

// recovered waits until the group is stable with members members, each
// holding source partitions, and has committed, on every source
// partition, the end offset listed once the fault's actions were done:
// the group is consuming again, all of it.
func (s *soak) recovered(members int) {
	t := s.t
	t.Helper()
	began := time.Now()
	var ends map[int32]int64
	var last string
	for time.Since(began) < 5*time.Minute {
		s.checkFailures()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		last = s.unrecovered(ctx, members, &ends)
		cancel()
		if last == "" {
			s.step("recovered with %d members %v after the fault's actions", members, time.Since(began).Round(time.Millisecond))
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("the group has not recovered with %d members within 5 minutes: %s", members, last)
}

// unrecovered says what the group still lacks; it lists the end offsets
// into *ends on its first success.
func (s *soak) unrecovered(ctx context.Context, members int, ends *map[int32]int64) string {
	if *ends == nil {
		listed, err := s.adm.ListEndOffsets(ctx, s.p.source)
		if err != nil {
			return fmt.Sprintf("listing end offsets: %v", err)
		}
		m := map[int32]int64{}
		listed.Each(func(o kadm.ListedOffset) { m[o.Partition] = o.Offset })
		*ends = m
	}
	groups, err := s.adm.DescribeGroups(ctx, s.p.group)
	if err != nil {
		return fmt.Sprintf("describing the group: %v", err)
	}
	g := groups[s.p.group]
	if g.State != "Stable" || len(g.Members) != members {
		return fmt.Sprintf("group %s with %d members", g.State, len(g.Members))
	}
	for _, m := range g.Members {
		if assigned(m, s.p.source) == 0 {
			return fmt.Sprintf("member %s holds no partition", m.MemberID)
		}
	}
	committed, err := s.adm.FetchOffsets(ctx, s.p.group)
	if err != nil {
		return fmt.Sprintf("fetching offsets: %v", err)
	}
	for part, end := range *ends {
		if c, _ := committed.Lookup(s.p.source, part); c.At < end {
			return fmt.Sprintf("partition %d committed at %d, end %d", part, c.At, end)
		}
	}
	return ""
}

// bounce SIGKILLs the broker that coordinates the group, waits until the
// cluster has failed over, restarts it, waits until every replica is in
// sync, and elects the preferred leaders, as an operator's rolling
// restart does (Kafka would do it itself up to 5 minutes later,
// leader.imbalance.check.interval.seconds, moving coordinators once more
// outside the window).
func (s *soak) bounce() {
	t := s.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	fctx, fcancel := context.WithTimeout(ctx, 10*time.Second)
	coords := s.adm.FindGroupCoordinators(fctx, s.p.group)
	fcancel()
	gc, ok := coords[s.p.group]
	if !ok || gc.Err != nil {
		t.Fatalf("finding the group coordinator: %v", gc.Err)
	}
	id := gc.NodeID
	if err := s.c.Node(id).Kill(ctx); err != nil {
		t.Fatal(err)
	}
	s.step("SIGKILL broker %d, the group's coordinator", id)
	if err := s.c.WaitFailedOver(ctx, id, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	s.step("broker %d fenced, its partitions led by others; restarting it", id)
	if err := s.c.Node(id).Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.c.WaitHealthy(ctx, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	// The test's admin client may hold the dead coordinator (see
	// clusterRun.freshAdmin).
	s.adm = newAdmin(t, s.c)
	res, err := s.adm.ElectLeaders(ctx, kadm.ElectPreferredReplica, nil)
	if err != nil {
		t.Fatalf("electing the preferred leaders: %v", err)
	}
	elected := 0
	for _, ps := range res {
		for _, p := range ps {
			switch {
			case p.Err == nil:
				elected++
			case !errors.Is(p.Err, kerr.ElectionNotNeeded):
				t.Logf("electing the preferred leader of %s/%d: %v %s", p.Topic, p.Partition, p.Err, p.ErrMessage)
			}
		}
	}
	s.step("broker %d back (started in %v), every replica in sync; %d preferred leaders elected",
		id, s.c.Node(id).StartupTime().Round(time.Millisecond), elected)
	s.recovered(2)
}

// sample scrapes every running instance every soakInterval until ctx ends.
func (s *soak) sample(ctx context.Context) {
	client := &http.Client{Timeout: 3 * time.Second}
	tick := time.NewTicker(soakInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		at := time.Since(s.began)
		s.mu.Lock()
		s.written = append(s.written, soakPoint{at, s.src.writtenSoFar()})
		s.mu.Unlock()
		for _, name := range s.names() {
			s.mu.Lock()
			in, addr := s.procs[name], s.metricsAddr[name]
			s.mu.Unlock()
			cmd, exited := in.current()
			select {
			case <-exited:
				continue // between processes
			default:
			}
			smp := scrapeInstance(ctx, client, addr, cmd.Process.Pid)
			smp.at, smp.name = at, name
			s.mu.Lock()
			s.samples = append(s.samples, smp)
			s.mu.Unlock()
		}
	}
}

// names returns the instances started so far, in order.
func (s *soak) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for _, n := range []string{"a", "b", "c"} {
		if _, ok := s.metricsAddr[n]; ok {
			names = append(names, n)
		}
	}
	return names
}

// scrapeInstance reads one process's metrics, and from /proc what they
// lack (the peak RSS) or what a failed scrape left unknown.
func scrapeInstance(ctx context.Context, client *http.Client, addr string, pid int) soakSample {
	nan := math.NaN()
	smp := soakSample{pid: pid, rss: nan, hwm: nan, heap: nan, goroutines: nan, fds: nan, committed: nan, aborted: nan, records: nan}
	if m, err := scrapeMetrics(ctx, client, "http://"+addr+"/metrics"); err == nil {
		get := func(name string) float64 {
			if v, ok := m[name]; ok {
				return v
			}
			return nan
		}
		smp.rss = get("process_resident_memory_bytes")
		smp.heap = get("go_memstats_heap_inuse_bytes")
		smp.goroutines = get("go_goroutines")
		smp.fds = get("process_open_fds")
		smp.committed = get(`quarantine_watch_transactions_total{outcome="committed"}`)
		smp.aborted = get("quarantine_watch_transactions_aborted_total")
		smp.records = get("quarantine_watch_records_consumed_total")
	}
	if st, err := procStatus(pid); err == nil {
		smp.hwm = st["VmHWM"]
		if math.IsNaN(smp.rss) {
			smp.rss = st["VmRSS"]
		}
	}
	if math.IsNaN(smp.fds) {
		if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
			smp.fds = float64(len(fds))
		}
	}
	return smp
}

// scrapeMetrics reads the Prometheus text format into a value per series,
// named as printed (name{labels}) and, summed over its labels, by name
// alone. Five gauges and three counters do not need expfmt, which would
// make prometheus/common a direct dependency of the module.
func scrapeMetrics(ctx context.Context, client *http.Client, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		series := line[:i]
		m[series] = v
		if name, _, ok := strings.Cut(series, "{"); ok {
			m[name] += v
		}
	}
	return m, sc.Err()
}

// procStatus returns the kB fields of /proc/<pid>/status in bytes.
func procStatus(pid int) (map[string]float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	st := map[string]float64{}
	for line := range strings.SplitSeq(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if kb, ok := strings.CutSuffix(strings.TrimSpace(v), " kB"); ok {
			if n, err := strconv.ParseFloat(kb, 64); err == nil {
				st[k] = n * 1024
			}
		}
	}
	return st, nil
}

// judge prints the table, the slopes and the soak line, and fails the
// test if the verdict says so.
func (s *soak) judge(res denseResult, unplanned int) {
	t := s.t
	s.mu.Lock()
	samples, windows, written := s.samples, s.windows, s.written
	s.mu.Unlock()
	names := s.names()
	period := 5 * time.Minute
	if s.duration < 20*time.Minute {
		period = s.duration / 5
	}
	deltas := soakDeltas(samples)
	end := s.duration
	for _, smp := range samples {
		end = max(end, smp.at)
	}
	table := soakTable(samples, deltas, written, windows, names, period, end)
	slopes := steadySlopes(samples, windows, s.warm, s.duration/3)
	aborted, ended := abortsOutside(deltas, windows)
	peak := 0.0
	for _, smp := range samples {
		if !math.IsNaN(smp.hwm) {
			peak = max(peak, smp.hwm)
		}
	}
	var out strings.Builder
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&out, "soak table: %d samples every %v; per %v, each instance's largest value (%s); load average at the end %s",
		len(samples), soakInterval, period, strings.Join(names, "/"), load)
	out.WriteString(table)
	out.WriteString("fault windows (from the first action until the group recovered, plus " + soakSettle.String() + "):\n")
	for _, w := range windows {
		fmt.Fprintf(&out, "  %-14s %5.1f-%5.1f min\n", w.what, w.from.Minutes(), w.to.Minutes())
	}
	out.WriteString("slopes per hour over each process's steady part (after the last window, and " + s.warm.String() + " after its first sample), least squares ± standard error, and the limit:\n")
	for _, sl := range slopes {
		fmt.Fprintf(&out, "  %s pid %d, %.1f-%.1f min, %d samples:", sl.name, sl.pid, sl.from.Minutes(), sl.to.Minutes(), sl.n)
		for i, m := range soakMetrics {
			fmt.Fprintf(&out, " %s %s±%.1f (≤ %s);", m.name, m.format(sl.perHour[i]), sl.stdErr[i]/m.scale, m.format(m.maxRate))
		}
		out.WriteString("\n")
	}
	out.WriteString("medians before the first fault and in the steady part:\n")
	for _, sl := range slopes {
		fmt.Fprintf(&out, "  %s pid %d:", sl.name, sl.pid)
		for i, m := range soakMetrics {
			if math.IsNaN(sl.before[i]) {
				fmt.Fprintf(&out, " %s -> %.1f;", m.name, sl.after[i]/m.scale)
			} else {
				fmt.Fprintf(&out, " %s %.1f -> %.1f;", m.name, sl.before[i]/m.scale, sl.after[i]/m.scale)
			}
		}
		out.WriteString("\n")
	}
	worst := worstSlopes(slopes)
	ratio := math.NaN()
	if ended > 0 {
		ratio = aborted / ended
	}
	fmt.Fprintf(&out, "soak: duration=%v records=%d outputs=%d aborted_source=%d kills=%d scale=2-3-2 broker_bounces=1 unplanned_exits=%d lost=%d duplicates=%d phantom=%d hanging=%d readers_agree=%t rss_peak=%.1fMiB rss_slope=%s/h goroutine_slope=%s/h heap_slope=%s/h fds_slope=%s/h abort_ratio_outside_faults=%.4f (%.0f/%.0f)",
		s.duration, res.records, res.outputs, res.abortedSource, s.kills, unplanned, res.lost, res.duplicates, res.phantom, res.hanging, res.readersAgree,
		peak/(1<<20), soakMetrics[0].format(worst[0]), soakMetrics[1].format(worst[1]), soakMetrics[2].format(worst[2]), soakMetrics[3].format(worst[3]),
		ratio, aborted, ended)
	t.Log("\n" + out.String())
	fmt.Println(out.String())
	if path, err := writeSoakSamples(samples); err != nil {
		t.Logf("writing the samples: %v", err)
	} else {
		fmt.Printf("soak samples: %s\n", path)
	}
	for _, why := range soakVerdict(slopes, aborted, ended, peak, soakLimits{rssPeak: podMemoryLimit, abortRatio: 0.05}) {
		t.Error(why)
	}
}

// writeSoakSamples keeps every sample in a CSV file outside the test's
// temporary directory, for a look at what the table sums up.
func writeSoakSamples(samples []soakSample) (string, error) {
	f, err := os.CreateTemp("", "quarantine-watch-soak-*.csv")
	if err != nil {
		return "", err
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "seconds,instance,pid,rss_bytes,vmhwm_bytes,heap_inuse_bytes,goroutines,open_fds,txn_committed,txn_aborted,records_consumed")
	for _, s := range samples {
		fmt.Fprintf(w, "%.0f,%s,%d,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f\n", s.at.Seconds(), s.name, s.pid,
			s.rss, s.hwm, s.heap, s.goroutines, s.fds, s.committed, s.aborted, s.records)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return "", err
	}
	return f.Name(), f.Close()
}
