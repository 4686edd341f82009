package k8s

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/boxlite-ai/boxlite-mcp/guestagent/client"
	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// state is the engine's part of the Handle: the pod a start made.
type state struct {
	Namespace string    `json:"namespace"`
	Pod       string    `json:"pod"`
	UID       types.UID `json:"uid"`
}

func handleOf(p *corev1.Pod) sandbox.Handle {
	b, _ := json.Marshal(state{Namespace: p.Namespace, Pod: p.Name, UID: p.UID})
	return sandbox.Handle{Version: 1, Engine: Name, State: b}
}

func parseHandle(h sandbox.Handle) (state, error) {
	var st state
	if len(h.State) == 0 {
		return st, nil
	}
	if h.Engine != Name {
		return st, fmt.Errorf("handle of engine %q, not %s", h.Engine, Name)
	}
	err := json.Unmarshal(h.State, &st)
	return st, err
}

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }

// reasonOf is an API error's message without the client's decoration.
func reasonOf(err error) string {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return se.Status().Message
	}
	return err.Error()
}

// apiError gives an API error its class.
func apiError(err error, what string) error {
	switch {
	case apierrors.IsForbidden(err):
		if strings.Contains(err.Error(), "exceeded quota") {
			return sandbox.Wrapf(sandbox.ErrResourceExhausted, err, "%s: the namespace's quota is used up: %s", what, reasonOf(err))
		}
		return sandbox.Wrapf(sandbox.ErrUnavailable, err, "%s: the cluster refused this server (RBAC): %s", what, reasonOf(err))
	case apierrors.IsInvalid(err):
		return sandbox.Wrapf(sandbox.ErrInvalidArgument, err, "%s: the cluster refused the box: %s", what, reasonOf(err))
	}
	return sandbox.Wrapf(sandbox.ErrUnavailable, err, "%s: %s", what, reasonOf(err))
}

// Start implements sandbox.Engine: network policy, files claim (with a
// storage class), then the pod; it returns once the agent answered
// through port-forward. On failure the returned handle names what was
// made, for Destroy.
func (e *Engine) Start(ctx context.Context, spec sandbox.Spec) (sandbox.Handle, error) {
	owner := spec.Owner
	np, err := e.networkPolicy(spec, owner)
	if err != nil {
		return sandbox.Handle{}, sandbox.Wrapf(sandbox.ErrInvalidArgument, err, "%v", err)
	}
	if _, err := e.cs.NetworkingV1().NetworkPolicies(e.ns).Create(ctx, np, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return sandbox.Handle{}, apiError(err, "creating the box's network policy")
	}
	if e.cfg.StorageClass != "" {
		if _, err := e.cs.CoreV1().PersistentVolumeClaims(e.ns).Create(ctx, e.claim(spec, owner), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return sandbox.Handle{}, apiError(err, "creating the box's files claim")
		}
	}
	pod, err := e.createPod(ctx, spec, owner)
	if err != nil {
		return sandbox.Handle{}, err
	}
	h := handleOf(pod)
	e.log.Info("pod created", "box_id", spec.ID, "pod", pod.Name, "image", spec.Image)
	if err := e.waitRunning(ctx, pod); err != nil {
		return h, err
	}
	exited := make(chan error, 1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		if e.waitEnd(wctx, pod.Name, pod.UID) == nil {
			exited <- errors.New("the pod ended")
		}
	}()
	dial := func(ctx context.Context) (net.Conn, error) { return e.dialPod(ctx, pod.Namespace, pod.Name, AgentPort) }
	if err := sandbox.WaitHello(ctx, dial, exited, 200*time.Millisecond, "boxlite-mcp/start"); err != nil {
		return h, err
	}
	return h, nil
}

// createPod creates the box's pod. A pod of the same name is either this
// box's own from an earlier run (deleted, then created again) or another
// box's of the same owner and name, made through another server.
func (e *Engine) createPod(ctx context.Context, spec sandbox.Spec, owner string) (*corev1.Pod, error) {
	want := e.pod(spec, owner)
	for attempt := 0; ; attempt++ {
		pod, err := e.cs.CoreV1().Pods(e.ns).Create(ctx, want, metav1.CreateOptions{})
		if err == nil {
			return pod, nil
		}
		if !apierrors.IsAlreadyExists(err) || attempt > 0 {
			return nil, apiError(err, "creating the box's pod")
		}
		old, gerr := e.cs.CoreV1().Pods(e.ns).Get(ctx, want.Name, metav1.GetOptions{})
		if gerr != nil {
			return nil, apiError(err, "creating the box's pod")
		}
		if old.Labels[labelID] != spec.ID {
			return nil, sandbox.Errorf(sandbox.ErrAlreadyExists, "a box named %q already exists in the cluster (made through another server sharing it); pick another name or destroy that box", spec.Name)
		}
		if err := e.deletePod(ctx, old.Name, old.UID); err != nil {
			return nil, err
		}
	}
}

// podProblem says why a pod will not come up by itself, or "" while it may.
func podProblem(p *corev1.Pod, agentImage string) string {
	if p.DeletionTimestamp != nil {
		return "the pod is being deleted"
	}
	if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
		msg := "the pod ended (" + string(p.Status.Phase) + ")"
		for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			if t := cs.State.Terminated; t != nil && (t.ExitCode != 0 || t.Reason != "Completed") {
				msg += fmt.Sprintf(": container %s exited %d (%s) %s", cs.Name, t.ExitCode, t.Reason, strings.TrimSpace(t.Message))
			}
		}
		return msg
	}
	for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		w := cs.State.Waiting
		if w == nil {
			if t := cs.State.Terminated; t != nil && cs.Name == initContainer && t.ExitCode != 0 {
				return fmt.Sprintf("the agent's init container failed (exit %d, %s): %s", t.ExitCode, t.Reason, strings.TrimSpace(t.Message))
			}
			continue
		}
		switch w.Reason {
		case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull":
			if cs.Name == initContainer {
				return fmt.Sprintf("the agent image %s cannot be pulled (%s: %s); load it into the cluster with `boxlite-mcp k8s agent-image` or set --k8s-agent-image", agentImage, w.Reason, w.Message)
			}
			return fmt.Sprintf("the image %s cannot be pulled (%s: %s)", cs.Image, w.Reason, w.Message)
		case "CreateContainerConfigError", "CreateContainerError", "RunContainerError", "CrashLoopBackOff":
			return fmt.Sprintf("container %s cannot run (%s: %s)", cs.Name, w.Reason, w.Message)
		}
	}
	return ""
}

// podRunning reports whether the box's container runs.
func podRunning(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
		return false
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == boxContainer {
			return cs.State.Running != nil
		}
	}
	return false
}

// waitRunning waits until the pod's box container runs, or fails as soon
// as the pod cannot come up (an image that cannot be pulled...). A pod the
// scheduler cannot place is waited for (a cluster may grow); the timeout's
// error then says why it was pending.
func (e *Engine) waitRunning(ctx context.Context, pod *corev1.Pod) error {
	last := pod
	err := e.watchPod(ctx, pod.Name, pod.UID, func(p *corev1.Pod) (bool, error) {
		if p == nil {
			return true, sandbox.Errorf(sandbox.ErrUnavailable, "box failed to start: its pod was deleted during the start")
		}
		last = p
		if msg := podProblem(p, e.cfg.AgentImage); msg != "" {
			// The cluster's own words (image names, the kubelet's reason)
			// are what the caller needs to fix the request.
			return true, sandbox.Errorf(sandbox.ErrUnavailable, "box failed to start: %s", msg)
		}
		return podRunning(p), nil
	})
	if err != nil && ctx.Err() != nil {
		why := "pending"
		for _, c := range last.Status.Conditions {
			if c.Status != corev1.ConditionTrue && c.Message != "" {
				why = c.Reason + ": " + c.Message
			}
		}
		return sandbox.Wrapf(sandbox.ErrDeadlineExceeded, ctx.Err(), "box did not start in time: its pod stayed %s", why)
	}
	return err
}

// waitEnd returns nil once the pod (of this uid) is gone or ended, or
// ctx's error.
func (e *Engine) waitEnd(ctx context.Context, name string, uid types.UID) error {
	return e.watchPod(ctx, name, uid, func(p *corev1.Pod) (bool, error) {
		return p == nil || p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded ||
			(p.Status.Phase == corev1.PodRunning && !podRunning(p)), nil
	})
}

// watchPod calls fn with the pod (nil once it is gone or replaced by
// another of the same name) at once and on every change, until fn says
// done or ctx ends; a watch the server closes is opened again.
func (e *Engine) watchPod(ctx context.Context, name string, uid types.UID, fn func(*corev1.Pod) (bool, error)) error {
	pods := e.cs.CoreV1().Pods(e.ns)
	for {
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		switch {
		case isNotFound(err) || (err == nil && p.UID != uid):
			_, err := fn(nil)
			return err
		case err != nil:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			e.log.Warn("reading a box's pod", "pod", name, "err", err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
			continue
		}
		if done, err := fn(p); done {
			return err
		}
		w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(), ResourceVersion: p.ResourceVersion})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		done, err := func() (bool, error) {
			defer w.Stop()
			for ev := range w.ResultChan() {
				switch ev.Type {
				case watch.Deleted:
					_, err := fn(nil)
					return true, err
				case watch.Added, watch.Modified:
					p, ok := ev.Object.(*corev1.Pod)
					if !ok {
						continue
					}
					if p.UID != uid {
						_, err := fn(nil)
						return true, err
					}
					if done, err := fn(p); done {
						return true, err
					}
				case watch.Error:
					return false, nil // expired: list again
				}
			}
			return false, nil
		}()
		if done {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// Recover implements sandbox.Engine.
func (e *Engine) Recover(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) error {
	st, err := parseHandle(h)
	if err != nil || st.Pod == "" {
		return sandbox.ErrNotRunning
	}
	p, err := e.cs.CoreV1().Pods(st.Namespace).Get(ctx, st.Pod, metav1.GetOptions{})
	if isNotFound(err) || (err == nil && (p.UID != st.UID || !podRunning(p))) {
		return sandbox.ErrNotRunning
	}
	if err != nil {
		return fmt.Errorf("reading pod %s: %w", st.Pod, err)
	}
	hctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := e.dialPod(hctx, st.Namespace, st.Pod, AgentPort)
	if err != nil {
		return err
	}
	c, err := client.New(hctx, conn, "boxlite-mcp/recover")
	if err != nil {
		return err
	}
	return c.Close()
}

// Dial implements sandbox.Engine.
func (e *Engine) Dial(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) (net.Conn, error) {
	st, err := parseHandle(h)
	if err != nil || st.Pod == "" {
		return nil, sandbox.ErrNotRunning
	}
	return e.dialPod(ctx, st.Namespace, st.Pod, AgentPort)
}

// Wait implements sandbox.Engine: until the pod is gone or ended.
func (e *Engine) Wait(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) error {
	st, err := parseHandle(h)
	if err != nil || st.Pod == "" {
		return nil
	}
	return e.waitEnd(ctx, st.Pod, st.UID)
}

// Stop implements sandbox.Engine: the agent's shutdown, then the pod is
// deleted (a pod cannot be stopped). The files claim, if any, stays.
func (e *Engine) Stop(ctx context.Context, spec sandbox.Spec, h sandbox.Handle, grace time.Duration) error {
	st, err := parseHandle(h)
	if err != nil || st.Pod == "" {
		return nil
	}
	if grace > 0 {
		sandbox.ShutdownAgent(ctx, func(ctx context.Context) (net.Conn, error) { return e.dialPod(ctx, st.Namespace, st.Pod, AgentPort) }, min(grace, 5*time.Second))
	}
	return e.deletePod(ctx, st.Pod, st.UID)
}

// deletePod deletes the pod of this uid at once and waits until it is gone.
func (e *Engine) deletePod(ctx context.Context, name string, uid types.UID) error {
	zero := int64(0)
	err := e.cs.CoreV1().Pods(e.ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !isNotFound(err) && !apierrors.IsConflict(err) {
		return apiError(err, "deleting the box's pod")
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return e.watchPod(wctx, name, uid, func(p *corev1.Pod) (bool, error) { return p == nil, nil })
}

// Destroy implements sandbox.Engine: the pod (only if it is this box's:
// a failed create's name may be another box's), the network policy and the
// files claim.
func (e *Engine) Destroy(ctx context.Context, spec sandbox.Spec, h sandbox.Handle) error {
	var errs []error
	name := podName(spec, spec.Owner)
	if p, err := e.cs.CoreV1().Pods(e.ns).Get(ctx, name, metav1.GetOptions{}); err == nil && p.Labels[labelID] == spec.ID {
		errs = append(errs, e.deletePod(ctx, name, p.UID))
	} else if err != nil && !isNotFound(err) {
		errs = append(errs, apiError(err, "reading the box's pod"))
	}
	if err := e.cs.NetworkingV1().NetworkPolicies(e.ns).Delete(ctx, "box-"+spec.ID, metav1.DeleteOptions{}); err != nil && !isNotFound(err) {
		errs = append(errs, apiError(err, "deleting the box's network policy"))
	}
	if e.cfg.StorageClass != "" {
		if err := e.cs.CoreV1().PersistentVolumeClaims(e.ns).Delete(ctx, claimName(spec), metav1.DeleteOptions{}); err != nil && !isNotFound(err) {
			errs = append(errs, apiError(err, "deleting the box's files claim"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return os.RemoveAll(spec.BoxDir)
}

// RemoteBoxes implements sandbox.Remote: owner's boxes are the pods (and,
// with a storage class, the files claims of stopped boxes) labelled with
// owner's hash.
func (e *Engine) RemoteBoxes(ctx context.Context, owner string) ([]sandbox.RemoteBox, error) {
	sel := labelManaged + "=" + managedBy
	if owner != "" {
		sel += "," + labelOwner + "=" + ownerHash(owner)
	}
	pods, err := e.cs.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, err
	}
	var out []sandbox.RemoteBox
	seen := map[string]bool{}
	for i := range pods.Items {
		p := &pods.Items[i]
		spec, o, ok := boxFromObject(p.ObjectMeta)
		if !ok || (owner != "" && o != owner) || seen[spec.ID] {
			continue
		}
		seen[spec.ID] = true
		out = append(out, sandbox.RemoteBox{ID: spec.ID, Name: spec.Name, Owner: o, Spec: spec, Handle: handleOf(p),
			Running: podRunning(p), Starting: p.Status.Phase == corev1.PodPending && p.DeletionTimestamp == nil, CreatedAt: p.CreationTimestamp.Time})
	}
	if e.cfg.StorageClass != "" {
		claims, err := e.cs.CoreV1().PersistentVolumeClaims(e.ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return nil, err
		}
		for _, c := range claims.Items {
			spec, o, ok := boxFromObject(c.ObjectMeta)
			if !ok || (owner != "" && o != owner) || seen[spec.ID] || c.DeletionTimestamp != nil {
				continue
			}
			seen[spec.ID] = true
			out = append(out, sandbox.RemoteBox{ID: spec.ID, Name: spec.Name, Owner: o, Spec: spec, CreatedAt: c.CreationTimestamp.Time})
		}
	}
	return out, nil
}
