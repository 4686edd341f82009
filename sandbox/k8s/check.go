package k8s

import (
	"context"
	"fmt"
	"strings"
	"time"

	authv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

// check asks the cluster what Available reports.
func (e *Engine) check(ctx context.Context) sandbox.Availability {
	a := sandbox.Availability{Isolation: e.isolation()}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := e.cs.Discovery().ServerVersion()
	if err != nil {
		a.Reason = fmt.Sprintf("the Kubernetes API server at %s does not answer: %v", e.rest.Host, err)
		return a
	}
	a.Details = append(a.Details, fmt.Sprintf("API server %s (Kubernetes %s), namespace %s", e.rest.Host, v.GitVersion, e.ns))
	var missing []string
	for _, r := range []struct{ verb, resource, sub, group string }{
		{"create", "pods", "", ""}, {"delete", "pods", "", ""}, {"list", "pods", "", ""}, {"watch", "pods", "", ""},
		{"create", "pods", "portforward", ""}, {"create", "networkpolicies", "", "networking.k8s.io"},
		{"delete", "networkpolicies", "", "networking.k8s.io"},
	} {
		ok, err := e.allowed(ctx, r.verb, r.group, r.resource, r.sub)
		if err != nil {
			a.Reason = fmt.Sprintf("cannot check this identity's permissions: %v", err)
			return a
		}
		if !ok {
			missing = append(missing, strings.TrimSuffix(r.verb+" "+r.resource+"/"+r.sub, "/"))
		}
	}
	if e.cfg.StorageClass != "" {
		for _, verb := range []string{"create", "delete", "list"} {
			if ok, err := e.allowed(ctx, verb, "", "persistentvolumeclaims", ""); err == nil && !ok {
				missing = append(missing, verb+" persistentvolumeclaims")
			}
		}
	}
	if len(missing) > 0 {
		a.Reason = fmt.Sprintf("this identity may not %s in namespace %s (RBAC)", strings.Join(missing, ", "), e.ns)
		return a
	}
	if e.cfg.RuntimeClass != "" {
		rc, err := e.cs.NodeV1().RuntimeClasses().Get(ctx, e.cfg.RuntimeClass, metav1.GetOptions{})
		switch {
		case err == nil:
			a.Details = append(a.Details, fmt.Sprintf("runtime class %s (handler %s)", rc.Name, rc.Handler))
		case isNotFound(err):
			a.Reason = fmt.Sprintf("the cluster has no runtime class %q", e.cfg.RuntimeClass)
			return a
		default:
			a.Details = append(a.Details, fmt.Sprintf("runtime class %s: cannot read it (%v)", e.cfg.RuntimeClass, err))
		}
	}
	if e.cfg.DefaultImage == "" {
		a.Details = append(a.Details, "no --k8s-default-image: create_box must name an image")
	}
	a.Details = append(a.Details, "agent image "+e.cfg.AgentImage, e.policyEnforcement(ctx))
	if e.cfg.StorageClass != "" {
		a.Details = append(a.Details, "files kept across stop in a PersistentVolumeClaim of storage class "+e.cfg.StorageClass)
	} else {
		a.Details = append(a.Details, "no --k8s-storage-class: boxes cannot be stopped (no idle stop); destroy ends them")
	}
	a.Usable, a.Reason = true, fmt.Sprintf("Kubernetes %s at %s, namespace %s", v.GitVersion, e.rest.Host, e.ns)
	return a
}

// allowed asks the API server whether this identity may do verb.
func (e *Engine) allowed(ctx context.Context, verb, group, resource, sub string) (bool, error) {
	r, err := e.cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authv1.SelfSubjectAccessReview{
		Spec: authv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authv1.ResourceAttributes{
			Namespace: e.ns, Verb: verb, Group: group, Resource: resource, Subresource: sub}},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, err
	}
	return r.Status.Allowed, nil
}

// knownEnforcers are the names of network plugins that enforce
// NetworkPolicy, as their pods in kube-system are named.
var knownEnforcers = []string{"calico", "cilium", "kube-router", "antrea", "weave-net", "canal", "romana", "kube-network-policies", "azure-npm", "openshift-sdn", "ovnkube"}

// policyEnforcement says whether the cluster's network plugin enforces
// NetworkPolicy (which `network: false` relies on), as far as this
// identity can tell: it looks for a known enforcer among kube-system's pods.
func (e *Engine) policyEnforcement(ctx context.Context) string {
	pods, err := e.cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{Limit: 500})
	if err != nil {
		return "NetworkPolicy enforcement: unknown (cannot list kube-system's pods: " + reasonOf(err) + "); `network: false` relies on it"
	}
	for _, p := range pods.Items {
		for _, k := range knownEnforcers {
			if strings.Contains(p.Name, k) {
				return "NetworkPolicy enforcement: likely (" + k + " runs in kube-system)"
			}
		}
	}
	return "NetworkPolicy enforcement: NONE FOUND (no known policy-enforcing network plugin in kube-system): `network: false` boxes are NOT cut off from the network on this cluster"
}
