package kafkaopts

import (
	"context"
	"fmt"
	"sync"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
)

// The default chain is loaded once: its provider is a cache that refreshes
// itself, and loading it reads files and may call the instance metadata service.
var (
	awsOnce     sync.Once
	awsProvider awssdk.CredentialsProvider
	awsErr      error
)

func awsCredentials(ctx context.Context) (awssdk.CredentialsProvider, error) {
	awsOnce.Do(func() {
		cfg, err := awsconfig.LoadDefaultConfig(context.WithoutCancel(ctx))
		if err != nil {
			awsErr = fmt.Errorf("kafkaopts: loading the AWS default configuration: %w", err)
			return
		}
		awsProvider = cfg.Credentials
	})
	return awsProvider, awsErr
}
