// Command prepare builds the test environment's components (etcd,
// kube-apiserver, kube-controller-manager, and the real node's kubelet,
// kube-proxy and kube-scheduler) and the tools the tests run
// (h2spec, the gRPC interop client and server, helm) into the test cache and
// prints their paths, so that `go test` timeouts are not spent compiling:
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
	// After kube-apiserver, whose packages fill most of the build cache the
	// kubelet needs.
	node, err := testenv.BuildNodeBinaries(ctx, logf)
	if err != nil {
		fmt.Fprintf(os.Stderr, "prepare: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("kubelet                 %s\n", node.Kubelet)
	fmt.Printf("kube-proxy              %s\n", node.KubeProxy)
	fmt.Printf("kube-scheduler          %s\n", node.KubeScheduler)

	tools, err := testenv.TestTools(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "prepare: %v\n", err)
		os.Exit(1)
	}
	for _, t := range tools {
		logf("prepare: building %s (cached after the first run)", t)
		path, err := t.Path(ctx)
		if err != nil {
			fmt.Fprintf(os.Stderr, "prepare: %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("%s %s\n", t, path)
	}
}
