package provision

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrMissing matches every MissingError.
var ErrMissing = errors.New("not found")

// MissingError says a stream or bucket does not exist and how to create it.
type MissingError struct {
	// Kind is "stream" or "bucket".
	Kind string
	// Name is the stream's or bucket's name.
	Name string
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("%s %s not found: start `tenantguard run` or run `tenantguard migrate` first", e.Kind, e.Name)
}

// Is makes errors.Is(err, ErrMissing) true.
func (e *MissingError) Is(target error) bool { return target == ErrMissing }

// Kept says a stream or bucket kept more replicas than its config asks for.
type Kept struct {
	// Kind is "stream" or "bucket".
	Kind string
	// Name is the stream's or bucket's name.
	Name string
	// Have is the replica count it kept; Want the configured one.
	Have, Want int
}

func (k Kept) String() string {
	return fmt.Sprintf("%s %s keeps %d replicas (configured %d): replicas are never lowered by tenantguard; "+
		"scale it down with the nats CLI if that is meant", k.Kind, k.Name, k.Have, k.Want)
}

// replicas is the count a config asks for; JetStream reads 0 as 1.
func replicas(n int) int { return max(n, 1) }

// AnswerWait bounds one look-up-and-create-or-update of a stream or
// bucket; Stream and Bucket ask again, within their context, when it
// passes unanswered. A cluster answers only one of several equal creates
// of a stream in flight at once (replicas that start together create the
// same streams and buckets): the others would wait for their whole
// context. Asked again, they find the stream and update it, which is
// answered.
const AnswerWait = 2 * time.Second

// askAgain runs do with AnswerWait per attempt until it is answered (an
// error other than its deadline, or success) or ctx ends.
func askAgain(ctx context.Context, do func(context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, AnswerWait)
		err := do(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
	}
}

// Stream creates sc's stream, or updates it to sc, keeping an existing
// stream's higher replica count. kept is nil unless it kept one.
func Stream(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig) (kept *Kept, err error) {
	err = askAgain(ctx, func(ctx context.Context) error {
		var err error
		kept, err = stream(ctx, js, sc)
		return err
	})
	return kept, err
}

func stream(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig) (kept *Kept, err error) {
	s, err := js.Stream(ctx, sc.Name)
	switch {
	case err == nil:
		if have := replicas(s.CachedInfo().Config.Replicas); have > replicas(sc.Replicas) {
			kept = &Kept{Kind: "stream", Name: sc.Name, Have: have, Want: replicas(sc.Replicas)}
			sc.Replicas = have
		}
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("stream %s: %w", sc.Name, err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
		return nil, fmt.Errorf("create stream %s: %w", sc.Name, err)
	}
	return kept, nil
}

// Bucket creates kc's bucket, or updates it to kc, keeping an existing
// bucket's higher replica count. kept is nil unless it kept one.
func Bucket(ctx context.Context, js jetstream.JetStream, kc jetstream.KeyValueConfig) (kept *Kept, err error) {
	err = askAgain(ctx, func(ctx context.Context) error {
		var err error
		kept, err = bucket(ctx, js, kc)
		return err
	})
	return kept, err
}

func bucket(ctx context.Context, js jetstream.JetStream, kc jetstream.KeyValueConfig) (kept *Kept, err error) {
	kv, err := js.KeyValue(ctx, kc.Bucket)
	switch {
	case err == nil:
		have, err := bucketReplicas(ctx, kv)
		if err != nil {
			return nil, fmt.Errorf("bucket %s: %w", kc.Bucket, err)
		}
		if have > replicas(kc.Replicas) {
			kept = &Kept{Kind: "bucket", Name: kc.Bucket, Have: have, Want: replicas(kc.Replicas)}
			kc.Replicas = have
		}
	case !errors.Is(err, jetstream.ErrBucketNotFound):
		return nil, fmt.Errorf("bucket %s: %w", kc.Bucket, err)
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, kc); err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", kc.Bucket, err)
	}
	return kept, nil
}

// bucketReplicas is the replica count of kv's stream.
func bucketReplicas(ctx context.Context, kv jetstream.KeyValue) (int, error) {
	st, err := kv.Status(ctx)
	if err != nil {
		return 0, err
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return 0, fmt.Errorf("unexpected bucket status %T", st)
	}
	return replicas(bs.StreamInfo().Config.Replicas), nil
}

// OpenStream returns the stream as it is; a MissingError when it does not
// exist. It never creates or changes anything.
func OpenStream(ctx context.Context, js jetstream.JetStream, name string) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, &MissingError{Kind: "stream", Name: name}
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	return s, nil
}

// OpenBucket returns the bucket as it is; a MissingError when it does not
// exist. It never creates or changes anything.
func OpenBucket(ctx context.Context, js jetstream.JetStream, name string) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, name)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, &MissingError{Kind: "bucket", Name: name}
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", name, err)
	}
	return kv, nil
}
