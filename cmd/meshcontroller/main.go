// Command meshcontroller is the mesh's control plane.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshctl/mesh/internal/cli/incluster"
	"github.com/meshctl/mesh/internal/cli/meshcontroller"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd := meshcontroller.NewRootCmd(incluster.Streams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "meshcontroller:", err)
		os.Exit(1)
	}
}
