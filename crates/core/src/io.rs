//! Byte-stream wrappers' plumbing: a wrapper that watches or prefixes one
//! direction of a stream passes the other through to its `inner` field
//! unchanged, and [`write_through_inner!`](crate::write_through_inner) /
//! [`read_through_inner!`](crate::read_through_inner) write that pass-through
//! once instead of in every wrapper.

/// `impl tokio::io::AsyncWrite` for a wrapper whose writes go to its
/// `inner` field as they are (vectored writes included). The wrapper must
/// be `Unpin`, and so must `inner`.
///
/// `write_through_inner!(impl for Wrapper);` or, generic,
/// `write_through_inner!(impl[S: AsyncWrite + Unpin] for Wrapper<S>);`
#[macro_export]
macro_rules! write_through_inner {
    (impl $([$($g:tt)*])? for $t:ty) => {
        impl $(<$($g)*>)? ::tokio::io::AsyncWrite for $t {
            fn poll_write(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &[u8],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                ::tokio::io::AsyncWrite::poll_write(::std::pin::Pin::new(&mut self.inner), cx, buf)
            }

            fn poll_write_vectored(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                bufs: &[::std::io::IoSlice<'_>],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                ::tokio::io::AsyncWrite::poll_write_vectored(::std::pin::Pin::new(&mut self.inner), cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                ::tokio::io::AsyncWrite::is_write_vectored(&self.inner)
            }

            fn poll_flush(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::tokio::io::AsyncWrite::poll_flush(::std::pin::Pin::new(&mut self.inner), cx)
            }

            fn poll_shutdown(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::tokio::io::AsyncWrite::poll_shutdown(::std::pin::Pin::new(&mut self.inner), cx)
            }
        }
    };
}

/// `impl tokio::io::AsyncRead` for a wrapper whose reads come from its
/// `inner` field as they are; the same forms as
/// [`write_through_inner!`](crate::write_through_inner).
#[macro_export]
macro_rules! read_through_inner {
    (impl $([$($g:tt)*])? for $t:ty) => {
        impl $(<$($g)*>)? ::tokio::io::AsyncRead for $t {
            fn poll_read(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &mut ::tokio::io::ReadBuf<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::tokio::io::AsyncRead::poll_read(::std::pin::Pin::new(&mut self.inner), cx, buf)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A wrapper that adds nothing: both directions reach the inner stream.
    struct Plain {
        inner: tokio::io::DuplexStream,
    }
    crate::read_through_inner!(impl for Plain);
    crate::write_through_inner!(impl for Plain);

    #[tokio::test]
    async fn both_directions_pass_through_to_the_inner_stream() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut plain = Plain { inner: a };
        plain.write_all(b"ping").await.unwrap();
        plain.flush().await.unwrap();
        let mut got = [0u8; 4];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        b.write_all(b"pong").await.unwrap();
        plain.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        plain.shutdown().await.unwrap();
        assert_eq!(
            b.read(&mut got).await.unwrap(),
            0,
            "shutdown reaches the peer"
        );
    }
}
