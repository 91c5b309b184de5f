package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// The env's address plan. Services get ClusterIPs from ServiceCIDR; the
// kubelet stand-in gives pods addresses from PodCIDR and nodes from NodeCIDR
// unless told otherwise. All are private: the API server rejects loopback
// addresses in Endpoints and EndpointSlices.
var (
	ServiceCIDR = netip.MustParsePrefix("10.96.0.0/16")
	PodCIDR     = netip.MustParsePrefix("10.244.0.0/16")
	NodeCIDR    = netip.MustParsePrefix("10.243.0.0/16")
)

// ContextName is the name of the cluster, user and context in the env's
// kubeconfig file.
const ContextName = "testenv"

// How long each component may take to become ready. Generous because the
// machines are small and shared with parallel test packages.
const (
	etcdTimeout              = time.Minute
	apiServerTimeout         = 2 * time.Minute
	controllerManagerTimeout = time.Minute
)

// Options tune Start. The zero value gives the full control plane.
type Options struct {
	// NoControllerManager leaves kube-controller-manager out. Without it
	// nothing reconciles: deleted namespaces stay Terminating, Deployments
	// get no Pods, no EndpointSlices or default ServiceAccounts appear. It
	// saves about a second of start and some CPU.
	NoControllerManager bool
	// KeepDir keeps the env's directory (logs, certificates, kubeconfig,
	// etcd data) after Stop, for looking into a failure.
	KeepDir bool
	// Logf, if set, hears about builds, starts and stops.
	Logf func(format string, args ...any)
}

// Env is a running control plane on loopback: etcd, kube-apiserver and
// (unless Options.NoControllerManager) kube-controller-manager. There is no
// scheduler and no kubelet; the kubelet stand-in (EnsureNode, SetPodState,
// RunKubelet) plays their part for tests, or StartNode adds real ones.
type Env struct {
	// Config authenticates as an administrator (group system:masters).
	// Callers must not modify it; use rest.CopyConfig.
	Config *rest.Config
	// KubeconfigPath is a kubeconfig file with the same credentials, for
	// kubectl and other programs; its context is ContextName.
	KubeconfigPath string
	// Dir holds the components' logs (etcd.log, kube-apiserver.log,
	// kube-controller-manager.log), certificates and etcd's data.
	Dir string
	// CACertPEM is the CA that signed the API server's serving certificate,
	// as published to every namespace in the kube-root-ca.crt ConfigMap.
	// kube-controller-manager also signs CertificateSigningRequests with it.
	CACertPEM []byte
	// Binaries are the component binaries the env runs.
	Binaries Binaries

	opts      Options
	procs     []*process // in start order
	clientset *kubernetes.Clientset
	stopOnce  sync.Once
	stopErr   error
	cancel    context.CancelFunc // ends the env's background work
	bg        sync.WaitGroup

	mu       sync.Mutex
	nodes    map[string]netip.Addr // node name -> InternalIP, nodes EnsureNode made
	podIPs   map[string]netip.Addr // pod UID -> address handed out
	nextPod  netip.Addr            // last address handed out from PodCIDR
	nextNode netip.Addr            // last address handed out from NodeCIDR
	// realNodes are nodes with a real kubelet (StartNode), whose pods the
	// kubelet stand-in leaves alone.
	realNodes map[string]bool
}

// Start builds the components if the cache lacks them (minutes, once per
// machine; see BuildBinaries), starts them on free loopback ports and
// returns when the API server is ready and, with the controller manager,
// once it has created the default ServiceAccount. On failure everything
// started is stopped and the error carries the tail of the failing
// component's log. ctx bounds the build and the start, not the env's life:
// call Stop.
func Start(ctx context.Context, opts Options) (_ *Env, err error) {
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	bins, err := BuildBinaries(ctx, opts.Logf)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "testenv-")
	if err != nil {
		return nil, fmt.Errorf("creating the env directory: %w", err)
	}
	bgCtx, cancel := context.WithCancel(context.Background())
	e := &Env{
		Dir:       dir,
		Binaries:  bins,
		opts:      opts,
		cancel:    cancel,
		nodes:     map[string]netip.Addr{},
		podIPs:    map[string]netip.Addr{},
		realNodes: map[string]bool{},
		nextPod:   PodCIDR.Addr().Next(), // .1 looks like a gateway
		nextNode:  NodeCIDR.Addr(),
	}
	defer func() {
		if err != nil {
			if e.opts.KeepDir {
				err = fmt.Errorf("%w\n(env directory kept: %s)", err, dir)
			}
			e.Stop()
		}
	}()
	began := time.Now()
	creds, err := writeCredentials(dir, ServiceCIDR.Addr().Next().AsSlice(), time.Now())
	if err != nil {
		return nil, err
	}
	e.CACertPEM = creds.caPEM

	etcdURL, err := e.startEtcd(ctx)
	if err != nil {
		return nil, err
	}
	if err := e.startAPIServer(ctx, creds, etcdURL); err != nil {
		return nil, err
	}
	if !opts.NoControllerManager {
		if err := e.startControllerManager(ctx, creds); err != nil {
			return nil, err
		}
	}
	e.bg.Add(1)
	go func() {
		defer e.bg.Done()
		e.reapTerminating(bgCtx)
	}()
	opts.Logf("testenv: control plane ready at %s in %s (dir %s)", e.Config.Host, time.Since(began).Round(100*time.Millisecond), dir)
	return e, nil
}

func (e *Env) startEtcd(ctx context.Context) (clientURL string, err error) {
	p, ports, err := startRetrying(ctx, 2, etcdTimeout, func(ports []int) (*process, func(context.Context) error, error) {
		client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
		peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
		// A retry starts afresh: the data of an attempt that lost its port
		// would remember that attempt's peer address.
		data := filepath.Join(e.Dir, "etcd")
		if err := os.RemoveAll(data); err != nil {
			return nil, nil, fmt.Errorf("clearing etcd's data: %w", err)
		}
		p, err := startProcess(e.Dir, "etcd", e.Binaries.Etcd,
			"--name=testenv",
			"--data-dir="+data,
			"--listen-client-urls="+client,
			"--advertise-client-urls="+client,
			"--listen-peer-urls="+peer,
			"--initial-advertise-peer-urls="+peer,
			"--initial-cluster=testenv="+peer,
			// The data is thrown away with the env: fsync only costs time.
			"--unsafe-no-fsync",
			"--log-level=warn",
		)
		if err != nil {
			return nil, nil, err
		}
		return p, func(ctx context.Context) error { return httpOK(ctx, http.DefaultClient, client+"/health", "") }, nil
	})
	if err != nil {
		return "", err
	}
	e.procs = append(e.procs, p)
	return "http://127.0.0.1:" + strconv.Itoa(ports[0]), nil
}

func (e *Env) startAPIServer(ctx context.Context, c *credentials, etcdURL string) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.caPEM)
	probe := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer probe.CloseIdleConnections()
	p, ports, err := startRetrying(ctx, 1, apiServerTimeout, func(ports []int) (*process, func(context.Context) error, error) {
		p, err := startProcess(e.Dir, "kube-apiserver", e.Binaries.KubeAPIServer,
			"--etcd-servers="+etcdURL,
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			// The reconciler would publish the advertise address as the
			// kubernetes Service's endpoint, and the API server rejects
			// loopback endpoints (logging so every 10 s). Nothing could
			// reach the API server through that Service anyway: there is
			// no kube-proxy.
			"--endpoint-reconciler-type=none",
			"--secure-port="+strconv.Itoa(ports[0]),
			"--cert-dir="+filepath.Join(e.Dir, "apiserver"),
			"--tls-cert-file="+c.servingCert,
			"--tls-private-key-file="+c.servingKey,
			"--client-ca-file="+c.caCert,
			"--token-auth-file="+c.tokenFile,
			"--authorization-mode=RBAC",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file="+c.saPub,
			"--service-account-signing-key-file="+c.saKey,
			"--service-cluster-ip-range="+ServiceCIDR.String(),
			// Real clusters allow it, and the mesh's init step may need it.
			"--allow-privileged=true",
			"--profiling=false",
		)
		if err != nil {
			return nil, nil, err
		}
		url := "https://127.0.0.1:" + strconv.Itoa(ports[0]) + "/readyz"
		return p, func(ctx context.Context) error { return httpOK(ctx, probe, url, c.token) }, nil
	})
	if err != nil {
		return err
	}
	e.procs = append(e.procs, p)
	host := "https://127.0.0.1:" + strconv.Itoa(ports[0])
	e.Config = &rest.Config{
		Host:            host,
		BearerToken:     c.token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.caPEM},
		// client-go's default of 5 requests per second makes tests slow
		// for no benefit on a private server.
		QPS:   200,
		Burst: 400,
	}
	if e.clientset, err = kubernetes.NewForConfig(e.Config); err != nil {
		return fmt.Errorf("creating a client: %w", err)
	}
	e.KubeconfigPath = filepath.Join(e.Dir, "kubeconfig")
	kc := clientcmdapi.NewConfig()
	kc.Clusters[ContextName] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: c.caPEM}
	kc.AuthInfos[ContextName] = &clientcmdapi.AuthInfo{Token: c.token}
	kc.Contexts[ContextName] = &clientcmdapi.Context{Cluster: ContextName, AuthInfo: ContextName, Namespace: metav1.NamespaceDefault}
	kc.CurrentContext = ContextName
	if err := clientcmd.WriteToFile(*kc, e.KubeconfigPath); err != nil {
		return fmt.Errorf("writing the kubeconfig: %w", err)
	}
	return nil
}

func (e *Env) startControllerManager(ctx context.Context, c *credentials) error {
	p, err := startProcess(e.Dir, "kube-controller-manager", e.Binaries.KubeControllerManager,
		"--kubeconfig="+e.KubeconfigPath,
		"--leader-elect=false",
		// No serving port: nothing needs its health or metrics, and the
		// port would be one more thing to collide on.
		"--secure-port=0",
		"--service-account-private-key-file="+c.saKey,
		"--root-ca-file="+c.caCert,
		"--cluster-signing-cert-file="+c.caCert,
		"--cluster-signing-key-file="+c.caKey,
		// With no kubelet to post heartbeats, the node lifecycle controller
		// would mark every node, and then every pod on it, NotReady after
		// about 40 s, and later evict the pods.
		"--controllers=*,-node-lifecycle-controller",
	)
	if err != nil {
		return err
	}
	e.procs = append(e.procs, p)
	// The default ServiceAccount is the first thing the controller manager
	// writes; pods cannot be created in a namespace before it exists.
	return p.waitReady(ctx, controllerManagerTimeout, func(ctx context.Context) error {
		_, err := e.clientset.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

// httpOK returns nil when GET url answers 200.
func httpOK(ctx context.Context, c *http.Client, url, token string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, body)
	}
	return nil
}

// Clientset returns a client with the env's administrator credentials.
func (e *Env) Clientset() kubernetes.Interface { return e.clientset }

// Stop kills the components and removes Dir (unless Options.KeepDir). It
// is safe to call more than once; later calls return the first result.
func (e *Env) Stop() error {
	e.stopOnce.Do(func() {
		e.cancel()
		e.bg.Wait()
		// Reverse order: clients before the servers they talk to.
		for i := len(e.procs) - 1; i >= 0; i-- {
			e.procs[i].kill()
		}
		if e.opts.KeepDir {
			e.opts.Logf("testenv: stopped; directory kept: %s", e.Dir)
			return
		}
		if err := os.RemoveAll(e.Dir); err != nil {
			e.stopErr = fmt.Errorf("removing the env directory: %w", err)
		}
	})
	return e.stopErr
}

// Alive returns an error naming any component that has exited, with the
// tail of its log: a test that sees the API server stop answering can say
// why.
func (e *Env) Alive() error {
	var errs []error
	for _, p := range e.procs {
		if p.exited() {
			errs = append(errs, p.failure(fmt.Errorf("exited: %v", p.err)))
		}
	}
	return errors.Join(errs...)
}

// isGone reports whether err says the object no longer exists or is being
// replaced, which the kubelet stand-in treats as nothing left to do.
func isGone(err error) bool {
	return apierrors.IsNotFound(err) || apierrors.IsGone(err)
}
