package engine

import (
	"context"
	"errors"

	"golang.org/x/sync/errgroup"
)

// task is one part of a running program: a listener's serve loop, a
// registration, a watch. It returns when ctx ends, or earlier with nil
// when its work is done.
type task func(ctx context.Context) error

// runTasks runs every task until ctx ends or one of them fails, then stops
// the others and returns when all have returned, with the first failure
// (a cancelled context is not one). A task may also finish early with nil
// (a registration that succeeded) without stopping the others.
func runTasks(ctx context.Context, tasks []task) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, t := range tasks {
		g.Go(func() error {
			if err := t(ctx); !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		})
	}
	return g.Wait()
}
