"""Text mining: label mentions in report sentences and their relation to the bookmarked lesion."""
