// Command meshctl installs, checks, injects and operates the mesh.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/mattn/go-isatty"

	"github.com/meshctl/mesh/internal/cli"
	"github.com/meshctl/mesh/internal/cli/command"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	streams := command.Streams{
		In:               os.Stdin,
		Out:              os.Stdout,
		ErrOut:           os.Stderr,
		OutIsTerminal:    isatty.IsTerminal(os.Stdout.Fd()),
		ErrOutIsTerminal: isatty.IsTerminal(os.Stderr.Fd()),
		Colour:           os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb",
	}
	code := cli.Main(ctx, os.Args[1:], streams, os.Getenv)
	stop()
	os.Exit(code)
}
