package inject

import (
	"bytes"
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// deploymentStream returns n Deployments of about 2 KB each, in the shape
// Helm charts render them.
func deploymentStream(n int) []byte {
	var b bytes.Buffer
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `---
# Source: shop/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-%[1]d
  namespace: shop
  labels:
    app.kubernetes.io/name: web-%[1]d
    app.kubernetes.io/instance: shop
    app.kubernetes.io/version: "1.4.2"
    app.kubernetes.io/managed-by: Helm
spec:
  replicas: 3
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      app.kubernetes.io/name: web-%[1]d
      app.kubernetes.io/instance: shop
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%%
      maxUnavailable: 0
  template:
    metadata:
      labels:
        app.kubernetes.io/name: web-%[1]d
        app.kubernetes.io/instance: shop
      annotations:
        checksum/config: 5f2b1c0e8d7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c
    spec:
      serviceAccountName: web
      securityContext:
        runAsNonRoot: true
        fsGroup: 1000
      containers:
        - name: web
          image: "registry.example.com/shop/web:1.4.2"
          imagePullPolicy: IfNotPresent
          args: ["--port=8080", "--log-format=json"]
          ports:
            - name: http
              containerPort: 8080
              protocol: TCP
          env:
            - name: DATABASE_URL
              valueFrom:
                secretKeyRef:
                  name: web-db
                  key: url
            - name: CACHE_SIZE
              value: "512"
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            initialDelaySeconds: 10
          readinessProbe:
            httpGet:
              path: /ready
              port: http
          resources:
            requests:
              cpu: 250m
              memory: 256Mi
            limits:
              memory: 512Mi
          volumeMounts:
            - name: config
              mountPath: /etc/web
              readOnly: true
      volumes:
        - name: config
          configMap:
            name: web-%[1]d
`, i)
	}
	return b.Bytes()
}

// BenchmarkInject10kDeployments injects a ~20 MB stream. Besides the
// throughput it reports peak-heap-x: the highest live heap seen during the
// run, as a multiple of the input's size.
func BenchmarkInject10kDeployments(b *testing.B) {
	in := deploymentStream(benchDocs)
	s := testSettings()
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var m runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > peak.Load() {
				peak.Store(m.HeapAlloc)
			}
		}
	}()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		out, _, err := Inject(in, s)
		if err != nil {
			b.Fatal(err)
		}
		if len(out) <= len(in) {
			b.Fatal("nothing injected")
		}
	}
	b.StopTimer()
	// The machine the benchmark runs on may be shared; throughput per
	// second of CPU time is the figure that does not depend on neighbours.
	if cpu := cpuTime() - cpu0; cpu > 0 {
		b.ReportMetric(float64(len(in))*float64(b.N)/1e6/cpu.Seconds(), "MB/cpu-s")
	}
	close(stop)
	<-done
	if p := peak.Load(); p > before.HeapAlloc {
		b.ReportMetric(float64(p-before.HeapAlloc)/float64(len(in)), "peak-heap-x")
	}
	b.ReportMetric(float64(len(in))/1e6, "input-MB")
}

// benchDocs is the stream's number of Deployments (10,000: about 20 MB).
var benchDocs = 10000

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
