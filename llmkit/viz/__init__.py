"""Widgets that show the model working (see "Widgets" in the course design).

Each view is a function returning an object that displays itself: live ipywidgets +
plotly `FigureWidget` in JupyterLab, a static plotly figure where there is no widget front
end (nbconvert, nbval, `LLMKIT_STATIC=1`), and a text summary in a terminal.

- `tokens(tokenizer, text)`: coloured token spans, ids on hover (lesson 02);
- `embeddings(matrix_or_model, labels)`: PCA projector with neighbours and a checkpoint slider (03);
- `attention(model, text, tokenizer=...)`: heatmap / lines per layer and head, offline (05);
- `bertviz(model, text, tokenizer=...)`: bertviz's head and model views (online only) (05);
- `TrainingDashboard()`: a trainer callback with live loss, lr and tokens/s (07);
- `next_token(model, tokenizer, prompt)`: next-token probabilities with sampling controls (08);
- `chat(model, tokenizer, system)`: a chat with streamed replies, temperature and reset (10).
"""

from llmkit.viz.attention import AttentionView, attention
from llmkit.viz.bertviz_view import bertviz, to_bertviz_attention
from llmkit.viz.chat import ChatView, chat
from llmkit.viz.dashboard import TrainingDashboard
from llmkit.viz.display import View, in_kernel, widgets_available
from llmkit.viz.embeddings import EmbeddingsView, embeddings, nearest_neighbours, pca
from llmkit.viz.next_token import NextTokenView, next_token
from llmkit.viz.tokens import TokensView, tokens

__all__ = [
    "attention", "AttentionView", "bertviz", "to_bertviz_attention", "TrainingDashboard",
    "embeddings", "EmbeddingsView", "nearest_neighbours", "pca", "next_token", "NextTokenView",
    "tokens", "TokensView", "chat", "ChatView", "View", "in_kernel", "widgets_available",
]
