// Command check loads compose files the way `docker compose config` does,
// with the library that command is built on (compose-go): the Compose
// Specification's JSON schema, interpolation, normalisation and the
// consistency checks (unknown services in depends_on, and so on). It exits 1
// with the reason on an invalid file, 0 on a valid one, and prints nothing
// else unless -print is given. It runs nothing and needs no Docker: it lets
// CI check deploy/compose/compose.yaml on a machine without the compose
// plugin. See ../validate.sh.
//
// It is a module of its own so that the main module does not depend on
// compose-go.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	show := flag.Bool("print", false, "print the resolved project, as `docker compose config` does")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: check [-print] COMPOSE-FILE...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	opts, err := cli.NewProjectOptions(flag.Args(), cli.WithOsEnv, cli.WithDotEnv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "check:", err)
		os.Exit(1)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "check: invalid:", err)
		os.Exit(1)
	}
	if *show {
		out, err := project.MarshalYAML()
		if err != nil {
			fmt.Fprintln(os.Stderr, "check:", err)
			os.Exit(1)
		}
		os.Stdout.Write(out)
	}
}
