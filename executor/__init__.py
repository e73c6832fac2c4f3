"""The real multi-process runner of a ddgsim plan (torch.distributed; gloo on CPU, NCCL on GPU)."""
