package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// The kubelet stand-in. The env has no scheduler and no kubelet, so nothing
// binds pods to nodes, starts containers or reports status. These methods do
// the API side of that work, which is all that controllers, EndpointSlices
// and `meshctl install`'s readiness wait can see. Data-plane tests that run
// a pod's processes themselves (in a network namespace) report its status
// with SetPodState and the namespace's address in PodState.IP.
//
// Pods that are deleted while bound to a node are removed at once (as a
// kubelet does after killing their containers), by a loop the env runs until
// Stop; without it they would stay Terminating forever, and so would their
// namespace.

// DefaultNode is the Node pods are bound to when neither PodState.Node nor
// their node affinity names one.
const DefaultNode = "testenv-node"

// PodState is the status the kubelet stand-in writes for a pod.
type PodState struct {
	// Ready makes every container running and ready and the pod Ready.
	// False with no WaitingReason: containers running but not ready, as
	// when a readiness probe fails.
	Ready bool
	// WaitingReason, when set, leaves the pod Pending with every container
	// waiting for this reason (e.g. "ImagePullBackOff",
	// "CrashLoopBackOff"), and overrides Ready.
	WaitingReason  string
	WaitingMessage string
	// IP is the pod's address. Zero: keep the pod's current address, or
	// use the node's for a hostNetwork pod, or hand out the next one from
	// PodCIDR. It must not be a loopback address: the API server refuses
	// those in EndpointSlices.
	IP netip.Addr
	// Node is the Node to bind an unbound pod to (created if missing).
	// Empty: the node the pod's required node affinity names by
	// metadata.name (as DaemonSet pods have), else DefaultNode. A pod that
	// is already bound stays on its node.
	Node string
}

// EnsureNode creates the Node name, Ready and with an InternalIP from
// NodeCIDR, unless it exists, and returns its InternalIP.
func (e *Env) EnsureNode(ctx context.Context, name string) (netip.Addr, error) {
	e.mu.Lock()
	ip, ok := e.nodes[name]
	if !ok {
		e.nextNode = e.nextNode.Next()
		ip = e.nextNode
	}
	e.mu.Unlock()
	if ok {
		return ip, nil
	}
	nodes := e.clientset.CoreV1().Nodes()
	_, err := nodes.Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:   name,
			Labels: map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"},
		},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return netip.Addr{}, fmt.Errorf("creating node %s: %w", name, err)
	}
	// Status is ignored on create; a kubelet writes it afterwards too.
	// Controllers annotate a new node at once, hence the retry.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := nodes.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, a := range n.Status.Addresses {
			if addr, err := netip.ParseAddr(a.Address); err == nil && a.Type == corev1.NodeInternalIP {
				ip = addr // a node made earlier, maybe by another env user
				return nil
			}
		}
		now := metav1.Now()
		capacity := corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("8"),
			corev1.ResourceMemory: resource.MustParse("16Gi"),
			corev1.ResourcePods:   resource.MustParse("110"),
		}
		n.Status = corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity,
			Conditions: []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
				Message: "testenv kubelet stand-in", LastHeartbeatTime: now, LastTransitionTime: now,
			}},
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: ip.String()},
				{Type: corev1.NodeHostName, Address: name},
			},
			NodeInfo: corev1.NodeSystemInfo{
				KubeletVersion: KubeVersion, OperatingSystem: "linux", Architecture: "amd64",
				ContainerRuntimeVersion: "testenv://" + KubeVersion,
			},
		}
		_, err = nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("writing the status of node %s: %w", name, err)
	}
	// Admission taints a new node not-ready until the node lifecycle
	// controller sees it Ready; that controller is off (see
	// startControllerManager), so lift the taint as it would.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := nodes.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		taints := n.Spec.Taints[:0]
		for _, t := range n.Spec.Taints {
			if t.Key != corev1.TaintNodeNotReady {
				taints = append(taints, t)
			}
		}
		if len(taints) == len(n.Spec.Taints) {
			return nil
		}
		n.Spec.Taints = taints
		_, err = nodes.Update(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("removing the not-ready taint of node %s: %w", name, err)
	}
	e.mu.Lock()
	e.nodes[name] = ip
	e.mu.Unlock()
	return ip, nil
}

// MarkPodsReady binds the pods in namespace that match selector (label
// selector syntax; empty: all) and reports them running and Ready. See
// SetPodsState.
func (e *Env) MarkPodsReady(ctx context.Context, namespace, selector string) ([]corev1.Pod, error) {
	return e.SetPodsState(ctx, namespace, selector, PodState{Ready: true})
}

// SetPodsState applies SetPodState to every pod in namespace (empty: all
// namespaces) that matches selector (label selector syntax; empty: all) and
// is not being deleted, and returns the pods as written.
func (e *Env) SetPodsState(ctx context.Context, namespace, selector string, st PodState) ([]corev1.Pod, error) {
	list, err := e.clientset.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	if st.IP.IsValid() && len(list.Items) > 1 {
		return nil, fmt.Errorf("setting the state of %d pods: one IP for several pods", len(list.Items))
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		np, err := e.SetPodState(ctx, p.Namespace, p.Name, st)
		if isGone(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, *np)
	}
	return out, nil
}

// SetPodState binds pod namespace/name to a node if it is not bound yet and
// writes its status as st says: what a kubelet would report after starting
// (or failing to start) its containers. Init containers are reported
// completed, or running and ready if they are sidecars (restartPolicy
// Always).
func (e *Env) SetPodState(ctx context.Context, namespace, name string, st PodState) (*corev1.Pod, error) {
	if st.IP.IsValid() && (st.IP.IsLoopback() || st.IP.IsUnspecified()) {
		return nil, fmt.Errorf("setting the state of pod %s/%s: %s is not a usable pod address", namespace, name, st.IP)
	}
	pods := e.clientset.CoreV1().Pods(namespace)
	pod, err := pods.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("getting pod %s/%s: %w", namespace, name, err)
	}
	node := pod.Spec.NodeName
	if node == "" {
		node = st.Node
	}
	if node == "" {
		node = requiredNode(pod)
	}
	if node == "" {
		node = DefaultNode
	}
	nodeIP, err := e.EnsureNode(ctx, node)
	if err != nil {
		return nil, err
	}
	if pod.Spec.NodeName == "" {
		err := pods.Bind(ctx, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, UID: pod.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: node},
		}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("binding pod %s/%s to node %s: %w", namespace, name, node, err)
		}
	}
	var written *corev1.Pod
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		ip := st.IP
		switch {
		case ip.IsValid():
		case pod.Spec.HostNetwork:
			ip = nodeIP
		default:
			ip = e.podIP(pod)
		}
		pod.Status = podStatus(pod, st, nodeIP, ip, metav1.Now())
		written, err = pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("writing the status of pod %s/%s: %w", namespace, name, err)
	}
	return written, nil
}

// requiredNode returns the node a pod's required node affinity names by
// metadata.name, as the DaemonSet controller pins its pods, or "".
func requiredNode(pod *corev1.Pod) string {
	a := pod.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return ""
	}
	for _, term := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, f := range term.MatchFields {
			if f.Key == "metadata.name" && f.Operator == corev1.NodeSelectorOpIn && len(f.Values) == 1 {
				return f.Values[0]
			}
		}
	}
	return ""
}

// podIP keeps the pod's address if it has one, else hands out the next free
// one from PodCIDR; the same pod always gets the same address.
func (e *Env) podIP(pod *corev1.Pod) netip.Addr {
	if a, err := netip.ParseAddr(pod.Status.PodIP); err == nil {
		return a
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if a, ok := e.podIPs[string(pod.UID)]; ok {
		return a
	}
	e.nextPod = e.nextPod.Next()
	a := e.nextPod
	e.podIPs[string(pod.UID)] = a
	return a
}

// podStatus is the status a kubelet would report for pod in state st.
func podStatus(pod *corev1.Pod, st PodState, nodeIP, podIP netip.Addr, now metav1.Time) corev1.PodStatus {
	old := pod.Status
	waiting := st.WaitingReason != ""
	ready := st.Ready && !waiting

	s := corev1.PodStatus{
		Phase:     corev1.PodRunning,
		HostIP:    nodeIP.String(),
		HostIPs:   []corev1.HostIP{{IP: nodeIP.String()}},
		PodIP:     podIP.String(),
		PodIPs:    []corev1.PodIP{{IP: podIP.String()}},
		StartTime: old.StartTime,
		QOSClass:  old.QOSClass,
	}
	if s.StartTime == nil {
		s.StartTime = &now
	}
	if waiting {
		s.Phase = corev1.PodPending
	}
	for _, c := range pod.Spec.InitContainers {
		cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, ContainerID: containerID(pod, c.Name)}
		switch {
		case waiting:
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: st.WaitingReason, Message: st.WaitingMessage}
			cs.ContainerID = ""
		case c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways:
			cs.ImageID = c.Image
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: *s.StartTime}
			cs.Ready, cs.Started = ready, ptrTo(true)
		default:
			cs.ImageID = c.Image
			cs.State.Terminated = &corev1.ContainerStateTerminated{
				ExitCode: 0, Reason: "Completed", StartedAt: *s.StartTime, FinishedAt: *s.StartTime,
				ContainerID: cs.ContainerID,
			}
			cs.Ready, cs.Started = true, ptrTo(false)
		}
		s.InitContainerStatuses = append(s.InitContainerStatuses, cs)
	}
	var unready []string
	for _, c := range pod.Spec.Containers {
		cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image}
		if waiting {
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: st.WaitingReason, Message: st.WaitingMessage}
			cs.Started = ptrTo(false)
		} else {
			cs.ImageID = c.Image
			cs.ContainerID = containerID(pod, c.Name)
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: *s.StartTime}
			cs.Ready, cs.Started = ready, ptrTo(true)
		}
		if !cs.Ready {
			unready = append(unready, c.Name)
		}
		s.ContainerStatuses = append(s.ContainerStatuses, cs)
	}

	cond := func(t corev1.PodConditionType, ok bool, reason, message string) {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, Reason: reason, Message: message, LastTransitionTime: now}
		if ok {
			c.Status, c.Reason, c.Message = corev1.ConditionTrue, "", ""
		}
		// Keep the transition time while the status does not change, as a
		// kubelet does; tools report "not ready for 5m" from it.
		for _, oc := range old.Conditions {
			if oc.Type == t && oc.Status == c.Status {
				c.LastTransitionTime = oc.LastTransitionTime
			}
		}
		s.Conditions = append(s.Conditions, c)
	}
	notReady := "containers with unready status: [" + strings.Join(unready, " ") + "]"
	cond(corev1.PodReadyToStartContainers, true, "", "")
	cond(corev1.PodInitialized, !waiting || len(pod.Spec.InitContainers) == 0, "ContainersNotInitialized",
		"containers with incomplete status: ["+strings.Join(containerNames(pod.Spec.InitContainers), " ")+"]")
	cond(corev1.ContainersReady, ready, "ContainersNotReady", notReady)
	cond(corev1.PodReady, ready, "ContainersNotReady", notReady)
	cond(corev1.PodScheduled, true, "", "")
	return s
}

func containerNames(cs []corev1.Container) []string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.Name
	}
	return names
}

// containerID makes a stable, runtime-shaped ID for a pod's container.
func containerID(pod *corev1.Pod, container string) string {
	h := sha256.Sum256([]byte(string(pod.UID) + "/" + container))
	return "testenv://" + hex.EncodeToString(h[:])
}

func ptrTo[T any](v T) *T { return &v }

// RunKubelet keeps applying st to the pods in namespace (empty: all
// namespaces) that match selector (empty: all) as they appear, until ctx
// ends; run it in a goroutine while the code under test waits for pods to
// become ready. Errors (a pod deleted mid-update, say) are passed to
// Options.Logf and retried on the next round, every 250 ms.
func (e *Env) RunKubelet(ctx context.Context, namespace, selector string, st PodState) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		list, err := e.clientset.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil && ctx.Err() == nil {
			e.opts.Logf("testenv: kubelet: listing pods: %v", err)
		}
		if err == nil {
			for i := range list.Items {
				p := &list.Items[i]
				if p.DeletionTimestamp != nil || inState(p, st) {
					continue
				}
				if _, err := e.SetPodState(ctx, p.Namespace, p.Name, st); err != nil && !isGone(err) && ctx.Err() == nil {
					e.opts.Logf("testenv: kubelet: %v", err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// inState reports whether pod already shows st, so RunKubelet does not
// rewrite it every round.
func inState(pod *corev1.Pod, st PodState) bool {
	if pod.Spec.NodeName == "" || pod.Status.PodIP == "" ||
		len(pod.Status.ContainerStatuses) != len(pod.Spec.Containers) ||
		len(pod.Status.InitContainerStatuses) != len(pod.Spec.InitContainers) {
		return false
	}
	if st.IP.IsValid() && pod.Status.PodIP != st.IP.String() {
		return false
	}
	if st.WaitingReason != "" {
		w := pod.Status.ContainerStatuses[0].State.Waiting
		return w != nil && w.Reason == st.WaitingReason && w.Message == st.WaitingMessage
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return pod.Status.Phase == corev1.PodRunning && (c.Status == corev1.ConditionTrue) == st.Ready
		}
	}
	return false
}

// setRealNode marks node as run by a real kubelet (StartNode), or no longer.
func (e *Env) setRealNode(node string, real bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if real {
		e.realNodes[node] = true
	} else {
		delete(e.realNodes, node)
	}
}

func (e *Env) isRealNode(node string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.realNodes[node]
}

// reapTerminating removes pods that are being deleted while bound to a
// node, until ctx ends: the part of a kubelet's work that, left undone,
// would keep such pods and their namespaces Terminating forever.
func (e *Env) reapTerminating(ctx context.Context) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		// ResourceVersion "0" is served from the API server's cache: cheap
		// enough to poll.
		list, err := e.clientset.CoreV1().Pods("").List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err != nil {
			continue
		}
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil || p.Spec.NodeName == "" || e.isRealNode(p.Spec.NodeName) {
				continue
			}
			err := e.clientset.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{
				GracePeriodSeconds: ptrTo(int64(0)),
				Preconditions:      &metav1.Preconditions{UID: &p.UID},
			})
			if err != nil && !isGone(err) && !apierrors.IsConflict(err) && ctx.Err() == nil {
				e.opts.Logf("testenv: removing terminating pod %s/%s: %v", p.Namespace, p.Name, err)
			}
		}
	}
}
