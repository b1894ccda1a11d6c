package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/quarantine-watch/quarantine-watch/consumer"
	"github.com/quarantine-watch/quarantine-watch/internal/cli"
	"github.com/quarantine-watch/quarantine-watch/internal/kafkaopts"
	"github.com/quarantine-watch/quarantine-watch/producer"
)

const watchlistUsage = `Usage:
  quarantine-watch watchlist list [flags]               the watched users, one line each
  quarantine-watch watchlist end [flags] ACCOUNT USER   end a user's watch

The watchlist is <alerts-topic>.watchlist, read as the service reads it
(read_committed; of a user's entries, the one opened last). "end" writes the user's end
record and tombstone in a transaction: every instance stops watching the
user (the watches of the user's earlier quarantines too) as soon as it
reads them, and the same quarantine read again does not
open the watch anew (a later one does). Flags (and their QW_* variables) are run's: --brokers,
--alerts-topic, --group, --tls..., --sasl-....
`

// runWatchlist is the watchlist subcommand: an operator's list and end.
func runWatchlist(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "end") {
		fmt.Fprint(stderr, watchlistUsage)
		return errUsage
	}
	verb := args[0]
	fs := cli.NewFlagSet("watchlist "+verb, stderr)
	var cfg consumer.Config
	var sec kafkaopts.Security
	var format, txnID string
	timeout := 30 * time.Second
	fs.List(&cfg.Brokers, "brokers", []string{"localhost:9092"}, "Kafka bootstrap brokers, comma-separated")
	fs.String(&cfg.AlertsTopic, "alerts-topic", "quarantine-alerts", "the service's alerts topic; the watchlist is <alerts-topic>.watchlist")
	fs.String(&cfg.Group, "group", "quarantine-watch", `the service's consumer group; "end" writes as transactional id "<group>/watchlist-end" unless --transactional-id`)
	fs.String(&txnID, "transactional-id", "", `transactional id "end" writes with (default "<group>/watchlist-end")`)
	fs.String(&format, "output", "table", "list: table, or json (one entry per line, as on the topic)")
	fs.Duration(&timeout, "timeout", timeout, "give up after this long")
	registerSecurity(fs, &sec)
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	opts, err := sec.Opts()
	if err != nil {
		return err
	}
	cfg.ClientOpts = opts
	if cfg.Logger, err = cli.NewLogger(os.Stderr, "warn", "text"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch verb {
	case "list":
		if fs.NArg() > 0 {
			return fmt.Errorf("watchlist list: unexpected arguments %q", fs.Args())
		}
		if format != "table" && format != "json" {
			return fmt.Errorf("watchlist list: --output %q: want table or json", format)
		}
		entries, skipped, err := consumer.WatchlistEntries(ctx, cfg)
		if err != nil {
			return err
		}
		if format == "json" {
			for _, e := range entries {
				b, err := producer.EncodeWatchEntry(e)
				if err != nil {
					return err
				}
				if _, err := fmt.Fprintf(stdout, "%s\n", b); err != nil {
					return err
				}
			}
		} else {
			now := time.Now()
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ACCOUNT\tUSER\tOPENED_AT\tUNTIL\tSTATE\tALERT_ID")
			for _, e := range entries {
				state := "watching"
				if now.After(e.Until) {
					state = "over"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Account, e.UserName, e.OpenedAt.Format(time.RFC3339), e.Until.Format(time.RFC3339), state, e.AlertID)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		if skipped > 0 {
			fmt.Fprintf(stderr, "watchlist: %d records on the topic are not valid watch entries (skipped; see the warnings above)\n", skipped)
		}
		return nil
	default: // end
		if fs.NArg() != 2 {
			return fmt.Errorf("watchlist end: want ACCOUNT USER, got %q", fs.Args())
		}
		if txnID == "" {
			txnID = cfg.Group + "/watchlist-end"
		}
		e, err := consumer.EndWatch(ctx, cfg, txnID, fs.Arg(0), fs.Arg(1))
		if errors.Is(err, consumer.ErrNoWatch) {
			return fmt.Errorf("watchlist end: %w; `quarantine-watch watchlist list` shows the watched users", err)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "ended the watch of %s in account %s (opened %s by alert %s, until %s)\n",
			e.UserName, e.Account, e.OpenedAt.Format(time.RFC3339), e.AlertID, e.Until.Format(time.RFC3339))
		return nil
	}
}
