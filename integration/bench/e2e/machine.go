package main

import (
	"bufio"
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
)

// machine describes where the benchmark ran.
type machine struct {
	nproc              int
	model              string
	memTotal           int64 // bytes
	kernel             string
	goVersion          string // of this benchmark
	qwGoVersion        string // of the quarantine-watch binary
	java               string
	kafka              string
	loadStart, loadEnd string
}

func describeMachine(ctx context.Context, b *bench) machine {
	m := machine{
		nproc:     runtime.NumCPU(),
		model:     cpuModel(),
		memTotal:  memTotal(),
		goVersion: runtime.Version(),
		loadStart: loadAverage(),
	}
	if v, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(v))
	}
	if bi, err := buildinfo.ReadFile(b.o.qwBin); err == nil {
		m.qwGoVersion = bi.GoVersion
	}
	if out, err := exec.CommandContext(ctx, b.o.java, "-version").CombinedOutput(); err == nil {
		first, _, _ := strings.Cut(string(out), "\n")
		m.java = strings.TrimSpace(first)
	}
	m.kafka = "broker image " + b.broker.Image()
	if b.broker.External() {
		m.kafka = "KAFKA_BROKERS=" + b.brokerList()
	}
	if vs, err := b.adm.ApiVersions(ctx); err == nil {
		vs.Each(func(v kadm.BrokerApiVersions) {
			if v.Err == nil {
				m.kafka += fmt.Sprintf(", API versions of Kafka %s", v.VersionGuess())
			}
		})
	}
	return m
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func memTotal() int64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// loadAverage returns the 1, 5 and 15 minute load averages.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
