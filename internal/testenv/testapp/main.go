// Command testapp is the workload of the real node's images (see
// testenv.AppImage): a static binary that is both the pods' sandbox process
// and a tiny application.
//
//	testapp serve [addr]  HTTP server (default :8080): GET / answers
//	                      "hello from <hostname>", then "client id: <id>"
//	                      when the request carries the mesh proxy's
//	                      x-meshctl-client-id header; /healthz "ok"
//	testapp get URL       GET URL and print the body; exit 1 on an error or
//	                      a status other than 200
//	testapp sleep         wait for SIGTERM
//	pause (as argv[0])    the sandbox's process: reap children, exit on SIGTERM
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	if filepath.Base(os.Args[0]) == "pause" {
		pause()
		return
	}
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		addr := ":8080"
		if len(args) > 0 {
			addr = args[0]
		}
		err = serve(addr)
	case "get":
		if len(args) != 1 {
			err = fmt.Errorf("get wants one URL")
			break
		}
		err = get(args[0])
	case "load":
		err = load(args)
	case "sleep":
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
		<-ch
	default:
		err = fmt.Errorf("unknown command %q: serve [addr] | get URL | load URL DURATION INTERVAL | sleep", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	}
}

// clientIDHeader is where the mesh proxy puts the verified SPIFFE id of a
// client that came over mesh TLS (and removes it from any other request).
const clientIDHeader = "x-meshctl-client-id"

func serve(addr string) error {
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(clientIDHeader)
		fmt.Printf("%s %s %s from %s (client id %q)\n", time.Now().Format(time.RFC3339), r.Method, r.URL.Path, r.RemoteAddr, id)
		fmt.Fprintf(w, "hello from %s\n", host)
		if id != "" {
			fmt.Fprintf(w, "client id: %s\n", id)
		}
	})
	fmt.Printf("testapp serving on %s (host %s)\n", addr, host)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return srv.ListenAndServe()
}

func get(url string) error {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	fmt.Print(string(body))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// load GETs a URL every interval for a duration over one keep-alive
// client, prints every failure and a summary, and fails if any request
// did.
func load(args []string) error {
	if len(args) != 3 {
		return fmt.Errorf("load wants URL DURATION INTERVAL")
	}
	d, err := time.ParseDuration(args[1])
	if err != nil {
		return err
	}
	every, err := time.ParseDuration(args[2])
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: 5 * time.Second}
	n, failed := 0, 0
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(every) {
		n++
		resp, err := c.Get(args[0])
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("status %s", resp.Status)
			}
		}
		if err != nil {
			failed++
			fmt.Printf("%s request %d failed: %v\n", time.Now().Format(time.RFC3339Nano), n, err)
		}
	}
	fmt.Printf("load: %d requests, %d failed\n", n, failed)
	if failed > 0 {
		return fmt.Errorf("%d of %d requests failed", failed, n)
	}
	return nil
}

// pause is the sandbox process: PID 1 of the pod, holding its namespaces.
func pause() {
	ch := make(chan os.Signal, 8)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range ch {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			var ws syscall.WaitStatus
			if pid, _ := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 {
				break
			}
		}
	}
}
