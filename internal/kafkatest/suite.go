package kafkatest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// Suite shares one broker between the tests of a package. The broker starts
// when the first test asks for it, so a run that selects no such test
// (-run, -bench, -fuzz) starts no container, and is removed after the last
// test:
//
//	var kafka kafkatest.Suite
//
//	func TestMain(m *testing.M) { os.Exit(kafka.Run(m)) }
//
//	func TestX(t *testing.T) {
//		b := kafka.Broker(t) // skips, or fails under QW_REQUIRE_KAFKA=1, without Kafka
//		...
//	}
//
// A test that kills or stops the shared broker restarts it before it
// returns, so the tests after it find it running.
type Suite struct {
	// Options configure the broker; set them before Run.
	Options Options

	once   sync.Once
	broker *Broker
	err    error
}

// Run runs the tests (m.Run) and then removes the broker, if one was
// started. It returns the exit code for os.Exit.
func (s *Suite) Run(m *testing.M) int {
	code := m.Run()
	if s.broker != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := s.broker.Terminate(ctx); err != nil {
			fmt.Fprintln(os.Stderr, err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// Broker returns the shared broker, starting it on the first call. Without
// Kafka it skips tb with HowTo, or fails it when QW_REQUIRE_KAFKA=1; when the
// broker fails to start it fails tb, and every later test, with the same
// error.
func (s *Suite) Broker(tb testing.TB) *Broker {
	tb.Helper()
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.Options.startTimeout()+time.Minute)
		defer cancel()
		s.broker, s.err = Start(ctx, s.Options)
		if s.err == nil {
			tb.Logf("kafkatest: broker %s (%s) ready in %s",
				strings.Join(s.broker.addrs, ","), imageOrExternal(s.broker), s.broker.StartupTime().Round(time.Millisecond))
		}
	})
	if s.err != nil {
		skipOrFail(tb, s.err)
	}
	return s.broker
}

func imageOrExternal(b *Broker) string {
	if b.External() {
		return EnvBrokers
	}
	return b.image
}
