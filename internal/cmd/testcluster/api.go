package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// apiClient is the little REST client the tool and its test need: JSON in
// and out over the cluster's TLS with one client certificate.
type apiClient struct {
	server string
	http   *http.Client
}

// statusError is a non-2xx answer of the API server.
type statusError struct {
	Code    int
	Message string
}

func (e *statusError) Error() string { return fmt.Sprintf("API status %d: %s", e.Code, e.Message) }

// newAPIClient authenticates with pki/<user>.crt and trusts pki/ca.crt.
func newAPIClient(server, caFile, certFile, keyFile string) (*apiClient, error) {
	pool := x509.NewCertPool()
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}
	return &apiClient{server: server, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
}

// do sends body (marshalled unless nil) and decodes a 2xx answer into out
// (unless nil); other answers are a *statusError.
func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.server+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if method == http.MethodPatch {
		req.Header.Set("Content-Type", "application/merge-patch+json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var st struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(b, &st) != nil || st.Message == "" {
			st.Message = string(b)
		}
		return &statusError{Code: resp.StatusCode, Message: st.Message}
	}
	if out == nil {
		return nil
	}
	if s, ok := out.(*string); ok {
		*s = string(b)
		return nil
	}
	return json.Unmarshal(b, out)
}

// create POSTs obj to a collection; an object that already exists is fine
// (a second up on the same etcd data, or a retried step).
func (c *apiClient) create(ctx context.Context, collection string, obj any) error {
	err := c.do(ctx, http.MethodPost, collection, obj, nil)
	var se *statusError
	if errors.As(err, &se) && se.Code == http.StatusConflict {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create in %s: %w", collection, err)
	}
	return nil
}

// poll calls fn every interval until it reports done, fails, or ctx ends;
// the last transient error is part of the timeout error.
func poll(ctx context.Context, what string, interval time.Duration, fn func() (bool, error)) error {
	var last error
	for {
		done, err := fn()
		if done && err == nil {
			return nil
		}
		if done {
			return err
		}
		last = err
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("waiting for %s: %w (last: %v)", what, ctx.Err(), last)
			}
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(interval):
		}
	}
}

// obj is an untyped Kubernetes object literal.
type obj = map[string]any

// podPhase is the part of a Pod the tool and its test read.
type podPhase struct {
	Spec struct {
		NodeName         string `json:"nodeName"`
		RuntimeClassName string `json:"runtimeClassName"`
	} `json:"spec"`
	Status struct {
		Phase             string `json:"phase"`
		Reason            string `json:"reason"`
		ContainerStatuses []struct {
			State map[string]struct {
				Reason   string `json:"reason"`
				Message  string `json:"message"`
				ExitCode int    `json:"exitCode"`
			} `json:"state"`
		} `json:"containerStatuses"`
	} `json:"status"`
}

// waitPod waits until the pod named reaches one of the phases and returns it.
func (c *apiClient) waitPod(ctx context.Context, ns, name string, phases ...string) (podPhase, error) {
	var p podPhase
	err := poll(ctx, "pod "+ns+"/"+name, 250*time.Millisecond, func() (bool, error) {
		p = podPhase{}
		if err := c.do(ctx, http.MethodGet, "/api/v1/namespaces/"+ns+"/pods/"+name, nil, &p); err != nil {
			return false, err
		}
		for _, ph := range phases {
			if p.Status.Phase == ph {
				return true, nil
			}
		}
		if p.Status.Phase == "Failed" {
			return true, fmt.Errorf("pod %s failed: %s %+v", name, p.Status.Reason, p.Status.ContainerStatuses)
		}
		return false, fmt.Errorf("phase %q %+v", p.Status.Phase, p.Status.ContainerStatuses)
	})
	return p, err
}
