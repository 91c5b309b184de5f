// Command prepare builds the test environment's components (etcd,
// kube-apiserver, kube-controller-manager) into the test cache and prints
// their paths, so that `go test` timeouts are not spent compiling:
//
//	go run ./internal/testenv/prepare
//
// The first run on a machine takes minutes; later runs return at once.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshctl/mesh/internal/testenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	bins, err := testenv.BuildBinaries(ctx, logf)
	if err != nil {
		fmt.Fprintf(os.Stderr, "prepare: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("etcd                    %s\n", bins.Etcd)
	fmt.Printf("kube-apiserver          %s\n", bins.KubeAPIServer)
	fmt.Printf("kube-controller-manager %s\n", bins.KubeControllerManager)
}
